"""A sampling session: base (+ upsampler, + noised CLIP) loaded once, then text -> image, inpainting, SDEdit.

    from training.sampling.session import SampleSettings, SamplingSession, SessionConfig
    session = SamplingSession(SessionConfig(base="runs/base", upsampler="runs/up"))
    out = session.text_to_image(["a red cube", "a blue ball"], SampleSettings(guidance=3, seed=0))
    out.images      # [2, 3, 256, 256] floats in [-1, 1] on the CPU; out.uint8() -> [2, 256, 256, 3]
    out.settings    # every setting used (JSON-ready): what `glide sample` writes to settings.json

What `glide sample | inpaint | sdedit` and evaluation run. SessionConfig and SampleSettings are
frozen dataclasses of plain values, so a Ray actor can be built from them:
`ray.remote(SamplingSession).remote(config)` loads the models inside the actor, on its device.

Determinism: each call seeds one generator on the session's device with `settings.seed` and draws
from it batch by batch in a fixed order (base, then upsampler), so the same call with the same
settings on the same device gives the same images, whether in-process or in an actor.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from shards import Progress, UserError
from training import api
from training.checkpoint import resolve_checkpoint_dir
from training.diffusion import create_diffusion
from training.sampling.clip_cond import clip_cond_fn_for_prompts
from training.sampling.editing import (INPAINT_MODES, inpaint, inpaint_model_kwargs, pin_known_region, sdedit,
                                       sdedit_start_step)
from training.sampling.guidance import text_model_fn
from training.sampling.images import load_image, load_regenerate_mask, to_uint8
from training.sampling.samplers import METHODS
from training.sampling.text2im import sample_text2im
from training.sampling.upsample import DEFAULT_RESPACING, DEFAULT_TEMPERATURE, low_res_consistency, upsample

BASE_KINDS = ("base", "base-inpaint")
PRECISIONS = ("auto", "fp32", "fp16")
DEFAULT_GUIDANCE = 3.0
DEFAULT_SDEDIT_STRENGTH = 0.6


@dataclass(frozen=True)
class SessionConfig:
    """What a session loads, and where. Paths: checkpoint folders or training run folders (their
    latest export). device: a torch device name; None = cuda when present, else cpu.
    precision: "auto" = fp16 torso and transformer on CUDA when the model config's use_fp16 asks
    (as glide-text2im samples), else fp32; "fp32"; "fp16" (CUDA only)."""
    base: str
    upsampler: Optional[str] = None
    clip: Optional[str] = None
    device: Optional[str] = None
    precision: str = "auto"
    use_ema: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "upsampler", "clip"):  # plain strings: picklable and JSON-ready
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        if self.precision not in PRECISIONS:
            raise UserError(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class SampleSettings:
    """How to sample. steps: a respacing spec of the base ("100", "10,10,3,2,2", "fast27", "ddim50");
    sampler: "ddpm" or "ddim" (default ddim for "ddimN" steps); guidance: classifier-free scale
    (1 = none; default 3, or 1 under CLIP guidance); clip_guidance: CLIP guidance scale, used when
    the session has a noised CLIP (None or 0: none); batch_size: images per batch; forward_batch:
    most rows per network call (guidance.ClassifierFreeGuidance); upsample: run the session's
    upsampler (if any) with upsampler_steps and starting-noise scale upsample_temp; low_res_consistency:
    hold the upsampler's predictions to the base image's colours (upsample.low_res_consistency;
    False samples as glide-text2im does)."""
    steps: str = "100"
    sampler: Optional[str] = None
    eta: float = 0.0
    guidance: Optional[float] = None
    clip_guidance: Optional[float] = 3.0
    seed: int = 0
    batch_size: int = 4
    forward_batch: Optional[int] = None
    upsample: bool = True
    upsampler_steps: str = DEFAULT_RESPACING
    upsample_temp: float = DEFAULT_TEMPERATURE
    low_res_consistency: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", str(self.steps))
        object.__setattr__(self, "upsampler_steps", str(self.upsampler_steps))
        if self.sampler is not None and self.sampler not in METHODS:
            raise UserError(f"sampler: {self.sampler!r} is not one of {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise UserError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.forward_batch is not None and self.forward_batch < 1:
            raise UserError(f"forward_batch: must be at least 1, got {self.forward_batch}")

    @property
    def method(self) -> str:
        return self.sampler or ("ddim" if self.steps.startswith("ddim") else "ddpm")


@dataclass
class Samples:
    """images: [N, 3, S, S] floats in [-1, 1] on the CPU, upsampled when an upsampler ran;
    base_images: the base's output before upsampling (None when not upsampled); prompts: [N];
    settings: every setting used, JSON-ready."""
    images: torch.Tensor
    prompts: list[str]
    settings: dict
    base_images: Optional[torch.Tensor] = None

    def uint8(self) -> np.ndarray:
        """[N, S, S, 3] uint8, as the PNGs hold them."""
        return to_uint8(self.images)


def pick_device(name: Optional[str], what: str = "device") -> torch.device:
    """`name`, or CUDA when present, else CPU; an unusable name is a UserError naming `what`."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"{what}: {name!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}: {name!r} asked for, but CUDA is not available here")
    return device


def kind_of(loaded) -> str:
    """The model config's kind as a plain string (the config may hold it as an enum)."""
    kind = loaded.config.kind
    return str(getattr(kind, "value", kind))


class SamplingSession:
    """Loads the models of `config` once (eagerly, so a bad checkpoint fails here); every method
    then samples with them. progress: report steps through shards.Progress on stderr."""

    def __init__(self, config: SessionConfig, *, progress: bool = False):
        self.config = config
        self.progress = progress
        for path in (config.base, config.upsampler, config.clip):
            if path:
                resolve_checkpoint_dir(path)  # every path checked before any model is loaded
        self.device = pick_device(config.device)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise UserError(f"precision: fp16 needs a CUDA device, not {self.device}")
        self.base = self._load(config.base)
        self.base_kind = kind_of(self.base)
        if self.base_kind not in BASE_KINDS:
            raise UserError(f"{config.base}: is a {self.base_kind!r} model, not a base model "
                            f"({' or '.join(map(repr, BASE_KINDS))})")
        self.precision = self._set_precision(self.base)
        self.upsampler = None
        if config.upsampler:
            self.upsampler = self._load(config.upsampler)
            kind = kind_of(self.upsampler)
            if kind not in ("upsampler", "upsampler-inpaint"):
                raise UserError(f"{config.upsampler}: is a {kind!r} model, not an upsampler")
            if kind == "upsampler-inpaint" and self.base_kind != "base-inpaint":
                raise UserError(f"{config.upsampler}: an 'upsampler-inpaint' model needs an inpainting base "
                                f"('base-inpaint'), not {self.base_kind!r}")
            self._set_precision(self.upsampler)
        self.clip = None
        if config.clip:
            self.clip = self._load(config.clip)
            if kind_of(self.clip) != "clip":
                raise UserError(f"{config.clip}: is a {kind_of(self.clip)!r} model, not a noised CLIP")
        self._diffusions: dict[tuple[str, str], object] = {}

    def __repr__(self) -> str:
        return f"SamplingSession({self.config!r}, device={self.device})"

    # ---- set-up ------------------------------------------------------------------------------------
    def _load(self, path: str):
        return api.load(path, device=self.device, use_ema=self.config.use_ema)

    def _set_precision(self, loaded) -> str:
        wanted = self.config.precision
        half = wanted == "fp16" or (wanted == "auto" and self.device.type == "cuda" and loaded.config.use_fp16)
        if half and hasattr(loaded.model, "convert_to_dtype"):
            loaded.model.convert_to_dtype(torch.float16)
            return "fp16"
        return "fp32"

    def _diffusion(self, role: str, spec: str):
        """The respaced process of the base or the upsampler, built once per spec (UserError if bad)."""
        key = (role, spec)
        if key not in self._diffusions:
            loaded = self.base if role == "base" else self.upsampler
            self._diffusions[key] = create_diffusion(loaded.config, timestep_respacing=spec)
        return self._diffusions[key]

    def _upsampler_diffusion(self, settings: SampleSettings):
        if self.upsampler is None or not settings.upsample:
            return None
        return self._diffusion("upsampler", settings.upsampler_steps)

    def _require_base(self, kind: str, task: str) -> None:
        if self.base_kind != kind:
            raise UserError(f"{self.config.base}: is a {self.base_kind!r} model; {task} needs a {kind!r} model")

    def _progress(self, desc: str, total: int):
        return Progress(desc, total, unit="steps") if self.progress else contextlib.nullcontext()

    # ---- sampling ------------------------------------------------------------------------------------
    def text_to_image(self, prompts: Sequence[str], settings: SampleSettings = SampleSettings()) -> Samples:
        """One image per prompt, in batches of settings.batch_size, upsampled when the session has
        an upsampler (and settings.upsample); CLIP-guided when it has a noised CLIP."""
        prompts = list(prompts)
        if not prompts:
            raise UserError("prompts: no captions given")
        self._require_base("base", "text-to-image")
        diffusion = self._diffusion("base", settings.steps)
        up_diffusion = self._upsampler_diffusion(settings)
        clip_scale = settings.clip_guidance if self.clip is not None and settings.clip_guidance else None
        guidance = settings.guidance if settings.guidance is not None else (1.0 if clip_scale else DEFAULT_GUIDANCE)
        generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        batches = [prompts[i:i + settings.batch_size] for i in range(0, len(prompts), settings.batch_size)]
        steps = diffusion.num_timesteps + (up_diffusion.num_timesteps if up_diffusion else 0)
        started = time.time()
        low, final = [], []
        with self._progress("sampling", len(batches) * steps) as bar:
            for number, batch in enumerate(batches, 1):
                if bar is not None and len(batches) > 1:
                    bar.note(batch=f"{number}/{len(batches)}")
                cond_fn = None
                if clip_scale:
                    cond_fn = clip_cond_fn_for_prompts(self.clip.model, batch, clip_scale, tokenizer=self.clip.tokenizer)
                x = sample_text2im(self.base.model, diffusion, self.base.tokenizer, batch, guidance_scale=guidance,
                                   method=settings.method, eta=settings.eta, cond_fn=cond_fn, generator=generator,
                                   device=self.device, progress=bar, forward_batch=settings.forward_batch)
                low.append(x.cpu())
                final.append(self._upsample(batch, x, settings, up_diffusion, generator, bar).cpu())
        extra = {"clip": str(self.clip.path) if clip_scale else None, "clip_guidance": clip_scale}
        return self._samples(final, low, prompts, settings, guidance, up_diffusion, started, extra)

    def inpaint(self, image, mask, prompt: str, settings: SampleSettings = SampleSettings(), *, n: int = 1,
                mode: Optional[str] = None) -> Samples:
        """n variations of `image` with the masked region regenerated to match `prompt`.

        image: a file path, PIL image or array of any size (centre-cropped and resized to the base's
        size, and the upsampler's); mask: the same kinds, WHITE (True, 1) = regenerate, black = keep.
        mode: "finetuned" (an inpainting base, conditioned on the known pixels) or "replace" (any
        base: GLIDE Appendix E); default by the base's kind. An inpainting upsampler also sees the
        image and mask at its size; a plain one upsamples the result.
        """
        mode = mode or ("finetuned" if self.base_kind == "base-inpaint" else "replace")
        if mode not in INPAINT_MODES:
            raise UserError(f"mode: {mode!r} is not one of {', '.join(INPAINT_MODES)}")
        if mode == "finetuned" and self.base_kind != "base-inpaint":
            raise UserError(f"{self.config.base}: mode 'finetuned' needs an inpainting checkpoint (kind 'base-inpaint')")
        diffusion = self._diffusion("base", settings.steps)
        up_diffusion = self._upsampler_diffusion(settings)
        guidance = settings.guidance if settings.guidance is not None else DEFAULT_GUIDANCE
        size = self.base.model.image_size
        base_image = load_image(image, size).to(self.device)
        base_keep = (1.0 - load_regenerate_mask(mask, size)).to(self.device)
        if up_diffusion is not None:
            up_size = self.upsampler.model.image_size
            up_image = load_image(image, up_size).to(self.device)
            up_keep = (1.0 - load_regenerate_mask(mask, up_size)).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        counts = _batch_sizes(n, settings.batch_size)
        steps = diffusion.num_timesteps + (up_diffusion.num_timesteps if up_diffusion else 0)
        started = time.time()
        low, final = [], []
        with self._progress("inpainting", len(counts) * steps) as bar:
            for count in counts:
                img, keep = base_image.expand(count, -1, -1, -1), base_keep.expand(count, -1, -1, -1)
                image_kwargs = inpaint_model_kwargs(img, keep) if self.base_kind == "base-inpaint" else {}
                prompts = [prompt] * count
                model_fn = text_model_fn(self.base.model, self.base.tokenizer, prompts, guidance, device=self.device,
                                         forward_batch=settings.forward_batch, **image_kwargs)
                x = inpaint(diffusion, model_fn, img, keep, mode=mode, method=settings.method, eta=settings.eta,
                            generator=generator, progress=bar)
                low.append(x.cpu())
                if up_diffusion is not None:
                    x = self._upsample(prompts, x, settings, up_diffusion, generator, bar,
                                       up_image.expand(count, -1, -1, -1), up_keep.expand(count, -1, -1, -1))
                final.append(x.cpu())
        return self._samples(final, low, [prompt] * n, settings, guidance, up_diffusion, started, {"mode": mode})

    def sdedit(self, image, prompt: str, settings: SampleSettings = SampleSettings(), *, n: int = 1,
               strength: Optional[float] = None, t_start: Optional[int] = None) -> Samples:
        """n SDEdit results: `image` (as for inpaint) noised part-way and denoised towards `prompt`.

        strength: fraction of the sampling steps to run, in (0, 1] (default 0.6); or t_start: a step
        of the base's original process; at most one of the two.
        """
        self._require_base("base", "SDEdit")
        diffusion = self._diffusion("base", settings.steps)
        up_diffusion = self._upsampler_diffusion(settings)
        if strength is None and t_start is None:
            strength = DEFAULT_SDEDIT_STRENGTH
        try:
            start = sdedit_start_step(diffusion, strength=strength, t_start=t_start)
        except ValueError as e:
            raise UserError(f"strength/t_start: {e}") from None
        guidance = settings.guidance if settings.guidance is not None else DEFAULT_GUIDANCE
        base_image = load_image(image, self.base.model.image_size).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        counts = _batch_sizes(n, settings.batch_size)
        steps = start + 1 + (up_diffusion.num_timesteps if up_diffusion else 0)
        started = time.time()
        low, final = [], []
        with self._progress("sdedit", len(counts) * steps) as bar:
            for count in counts:
                prompts = [prompt] * count
                model_fn = text_model_fn(self.base.model, self.base.tokenizer, prompts, guidance, device=self.device,
                                         forward_batch=settings.forward_batch)
                x = sdedit(diffusion, model_fn, base_image.expand(count, -1, -1, -1), start_step=start,
                           method=settings.method, eta=settings.eta, generator=generator, progress=bar)
                low.append(x.cpu())
                final.append(self._upsample(prompts, x, settings, up_diffusion, generator, bar).cpu())
        extra = {"strength": strength, "t_start": t_start, "start_step": start,
                 "start_timestep": int(diffusion.timestep_map[start])}
        return self._samples(final, low, [prompt] * n, settings, guidance, up_diffusion, started, extra)

    # ---- shared ----------------------------------------------------------------------------------------
    def _upsample(self, prompts, low_res, settings, diffusion, generator, bar, image=None, keep=None):
        """The upsampler on low_res, or low_res itself without one (an inpainting upsampler also
        sees `image` and `keep`, resized to its size)."""
        if diffusion is None:
            return low_res
        kwargs = {}
        if kind_of(self.upsampler) == "upsampler-inpaint" and image is not None:
            size = self.upsampler.model.image_size
            big = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
            big_keep = F.interpolate(keep, size=(size, size), mode="nearest")
            kwargs = dict(inpaint_model_kwargs(big, big_keep), denoised_fn=pin_known_region(big, big_keep))
        if settings.low_res_consistency:
            consistent, pinned = low_res_consistency(low_res), kwargs.get("denoised_fn")
            kwargs["denoised_fn"] = consistent if pinned is None else (lambda x0: pinned(consistent(x0)))
        return upsample(self.upsampler.model, diffusion, self.upsampler.tokenizer, prompts, low_res,
                        temperature=settings.upsample_temp, generator=generator, progress=bar, **kwargs)

    def _samples(self, final, low, prompts, settings, guidance, up_diffusion, started, extra) -> Samples:
        images = torch.cat(final)
        upsampled = up_diffusion is not None
        used = {
            "model": str(self.base.path), "model_step": self.base.step, "model_kind": self.base_kind,
            "steps": settings.steps, "sampler": settings.method, "eta": settings.eta, "guidance": guidance,
            "batch_size": settings.batch_size, "seed": settings.seed,
            "upsampler": str(self.upsampler.path) if upsampled else None,
            "upsampler_steps": settings.upsampler_steps if upsampled else None,
            "upsample_temp": settings.upsample_temp if upsampled else None,
            "low_res_consistency": settings.low_res_consistency if upsampled else None,
            "device": str(self.device), "precision": self.precision,
            "seconds": round(time.time() - started, 2), "image_size": int(images.shape[-1]), **extra,
        }
        return Samples(images=images, prompts=list(prompts), settings=used,
                       base_images=torch.cat(low) if upsampled else None)


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    if n < 1:
        raise UserError(f"n: must be at least 1, got {n}")
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]
