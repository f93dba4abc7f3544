"""`glide sample | inpaint | sdedit`: images from a checkpoint, written as PNGs plus a grid.

    glide sample --model ckpt/base --prompt "a red cube" --guidance 3 --batch-size 4 -o out/
    glide sample --model runs/demo --prompts captions.txt --steps ddim50 --upsampler ckpt/up -o out/
    glide inpaint --model ckpt/base-inpaint --image photo.png --mask mask.png --prompt "a hat" -o out/
    glide sdedit --model ckpt/base --image sketch.png --prompt "a castle" --strength 0.6 -o out/

OUT gets sample-0000.png ... (one per image), grid.png and settings.json (every setting and the
prompt of each image). Masks: WHITE marks the pixels to regenerate, black the ones to keep.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEFAULT_STEPS = "100"


def _add_common(p: argparse.ArgumentParser, *, batch_help: str) -> None:
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="checkpoint folder, or a training run folder (its latest export)")
    p.add_argument("--steps", default=DEFAULT_STEPS, metavar="N",
                   help="sampling steps: a count (\"100\"), section counts (\"10,10,3,2,2\"), \"fast27\" or "
                        f"\"ddimN\" (default {DEFAULT_STEPS})")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default=None,
                   help="ancestral (ddpm) or DDIM; default ddim for --steps ddimN, else ddpm")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    p.add_argument("--guidance", type=float, default=None, metavar="S",
                   help="classifier-free guidance scale (1 = none; default 3)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help=batch_help)
    p.add_argument("--forward-batch", type=int, default=None, metavar="R",
                   help="most rows per network call (guidance runs 2 x batch rows; default: all in one call)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    p.add_argument("--upsampler", default=None, metavar="CKPT", help="upsampler checkpoint to run after the base")
    p.add_argument("--upsampler-steps", default="fast27", metavar="N", help="upsampler respacing (default fast27)")
    p.add_argument("--upsample-temp", type=float, default=0.997, metavar="T",
                   help="scale of the upsampler's starting noise (default 0.997)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the PNGs and settings.json")


def register(subparsers, common) -> None:
    s = subparsers.add_parser("sample", parents=[common], help="generate images from captions",
                              description="Sample a base model with classifier-free guidance (and an optional "
                                          "upsampler); writes one PNG per image, grid.png and settings.json.")
    prompts = s.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", metavar="TEXT", help="one caption")
    prompts.add_argument("--prompts", metavar="FILE", help="a text file with one caption per line")
    s.add_argument("--per-prompt", type=int, default=None, metavar="N",
                   help="images per caption (default: --batch-size with --prompt, 1 with --prompts)")
    s.add_argument("--clip", default=None, metavar="CKPT",
                   help="noised CLIP checkpoint for CLIP guidance (then --guidance defaults to 1: none)")
    s.add_argument("--clip-guidance", type=float, default=3.0, metavar="S", help="CLIP guidance scale (default 3)")
    _add_common(s, batch_help="images per forward batch (default 4)")
    s.set_defaults(func=run_sample)

    i = subparsers.add_parser("inpaint", parents=[common], help="regenerate a masked region of an image",
                              description="Fill the WHITE region of --mask in --image to match --prompt. "
                                          "An inpainting checkpoint is conditioned on the known pixels; any other "
                                          "base model uses the GLIDE paper's replacement method (Appendix E).")
    i.add_argument("--image", required=True, help="the image to edit")
    i.add_argument("--mask", required=True, help="mask image: white = regenerate, black = keep")
    i.add_argument("--prompt", required=True, metavar="TEXT", help="caption of the edited image")
    i.add_argument("--mode", choices=("finetuned", "replace"), default=None,
                   help="default: finetuned for inpainting checkpoints, else replace")
    _add_common(i, batch_help="variations to generate (default 4)")
    i.set_defaults(func=run_inpaint)

    e = subparsers.add_parser("sdedit", parents=[common], help="turn a sketch into an image (SDEdit)",
                              description="Noise --image part-way and denoise it towards --prompt (SDEdit).")
    e.add_argument("--image", required=True, help="the sketch or image to start from")
    e.add_argument("--prompt", required=True, metavar="TEXT", help="caption of the result")
    start = e.add_mutually_exclusive_group()
    start.add_argument("--strength", type=float, default=None,
                       help="fraction of the process to run, in (0, 1] (default 0.6; 1 = ignore the image)")
    start.add_argument("--t-start", type=int, default=None, metavar="T",
                       help="start at this step of the model's original process (0..diffusion_steps-1)")
    _add_common(e, batch_help="variations to generate (default 4)")
    e.set_defaults(func=run_sdedit)


# ---- shared ------------------------------------------------------------------------------------
class _Run:
    """What every command needs: device, seeded generator, base model (+ optional upsampler)."""

    def __init__(self, args, *, allowed_kinds: tuple[str, ...]):
        from shards import UserError
        from training.checkpoint import resolve_checkpoint_dir

        if args.batch_size < 1:
            raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
        if args.forward_batch is not None and args.forward_batch < 1:
            raise UserError(f"--forward-batch: must be at least 1, got {args.forward_batch}")
        for path in (args.model, args.upsampler, getattr(args, "clip", None)):
            if path:
                resolve_checkpoint_dir(path)  # a wrong path fails now, before torch is imported
        for path in (getattr(args, "image", None), getattr(args, "mask", None)):
            if path and not os.path.isfile(path):
                raise UserError(f"{path}: no such image file")
        import torch

        import training

        self.args = args
        if args.guidance is None:
            args.guidance = 1.0 if getattr(args, "clip", None) else 3.0
        self.device = _pick_device(args.device)
        self.base = training.load(args.model, device=self.device, timestep_respacing=args.steps)
        if self.base.config.kind not in allowed_kinds:
            raise UserError(f"{args.model}: is a {self.base.config.kind!r} model; this command needs "
                            f"{' or '.join(repr(k) for k in allowed_kinds)}")
        self.diffusion = self.base.diffusion  # validates --steps (UserError on a bad spec)
        _half_precision_on_gpu(self.base)
        self.method = args.sampler or ("ddim" if str(args.steps).startswith("ddim") else "ddpm")
        self.up = None
        if args.upsampler:
            self.up = training.load(args.upsampler, device=self.device, timestep_respacing=args.upsampler_steps)
            want = ("upsampler-inpaint", "upsampler") if "inpaint" in self.base.config.kind else ("upsampler",)
            if self.up.config.kind not in want:
                raise UserError(f"{args.upsampler}: is a {self.up.config.kind!r} model, not an upsampler")
            self.up_diffusion = self.up.diffusion
            _half_precision_on_gpu(self.up)
        self.generator = torch.Generator(device=self.device).manual_seed(args.seed)
        self.progress = not args.no_progress
        self.started = time.time()

    def upsample(self, prompts, low_res, image=None, keep=None):
        """Run the upsampler if one was given (inpainting upsamplers also see the image and mask)."""
        if self.up is None:
            return low_res
        import torch.nn.functional as F

        from training.sampling.editing import inpaint_model_kwargs, pin_known_region
        from training.sampling.upsample import upsample

        kwargs = {}
        if self.up.config.kind == "upsampler-inpaint" and image is not None:
            size = self.up.model.image_size
            big = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
            big_keep = F.interpolate(keep, size=(size, size), mode="nearest")
            kwargs = dict(inpaint_model_kwargs(big, big_keep), denoised_fn=pin_known_region(big, big_keep))
        return upsample(self.up.model, self.up_diffusion, self.up.tokenizer, prompts, low_res,
                        temperature=self.args.upsample_temp, generator=self.generator,
                        progress=self.progress, **kwargs)

    def write(self, images, prompts, command: str, extra: dict) -> None:
        from training.sampling.images import save_samples

        args = self.args
        paths = save_samples(images, args.output)
        settings = {
            "command": command, "model": str(self.base.path), "model_step": self.base.step,
            "model_kind": self.base.config.kind, "steps": args.steps, "sampler": self.method, "eta": args.eta,
            "guidance": args.guidance, "batch_size": args.batch_size, "seed": args.seed,
            "upsampler": str(self.up.path) if self.up else None,
            "upsampler_steps": args.upsampler_steps if self.up else None,
            "upsample_temp": args.upsample_temp if self.up else None,
            "device": str(self.device), "seconds": round(time.time() - self.started, 2),
            "image_size": int(images.shape[-1]), **extra,
            "images": [{"file": p.name, "prompt": prompt} for p, prompt in zip(paths, prompts)],
        }
        from pathlib import Path

        (Path(args.output) / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        print(f"wrote {len(paths)} images, grid.png and settings.json to {args.output} "
              f"({settings['seconds']} s on {self.device})")


def _pick_device(name):
    """--device, or CUDA when present, else CPU; an unusable --device is a UserError."""
    import torch

    from shards import UserError

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device: {name!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {name!r} asked for, but CUDA is not available here")
    return device


def _half_precision_on_gpu(loaded) -> None:
    """fp16 torso and transformer on CUDA when the config asks (use_fp16), as glide-text2im samples."""
    import torch

    if loaded.device.type == "cuda" and loaded.config.use_fp16 and hasattr(loaded.model, "convert_to_dtype"):
        loaded.model.convert_to_dtype(torch.float16)


def _read_prompts(args) -> list[str]:
    from shards import UserError

    if args.prompt is not None:
        if not args.prompt.strip():
            raise UserError("--prompt: empty caption")
        return [args.prompt]
    try:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{args.prompts}: cannot read prompts: {e}") from None
    if not prompts:
        raise UserError(f"{args.prompts}: no captions (one per line expected)")
    return prompts


# ---- commands ------------------------------------------------------------------------------------
def run_sample(args) -> int:
    from shards import UserError

    prompts = _read_prompts(args)
    per_prompt = args.per_prompt or (args.batch_size if args.prompt is not None else 1)
    if per_prompt < 1:
        raise UserError(f"--per-prompt: must be at least 1, got {per_prompt}")
    run = _Run(args, allowed_kinds=("base",))
    import torch

    from training.sampling.text2im import sample_text2im

    clip = None
    if args.clip:
        import training

        clip = training.load(args.clip, device=run.device)
        if clip.config.kind != "clip":
            raise UserError(f"{args.clip}: is a {clip.config.kind!r} model, not a noised CLIP")
    todo = [p for p in prompts for _ in range(per_prompt)]
    images = []
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start:start + args.batch_size]
        if len(todo) > args.batch_size and run.progress:
            print(f"batch {start // args.batch_size + 1}/{-(-len(todo) // args.batch_size)}", file=sys.stderr)
        cond_fn = None
        if clip is not None:
            from training.sampling.clip_cond import clip_cond_fn_for_prompts

            cond_fn = clip_cond_fn_for_prompts(clip.model, batch, args.clip_guidance, tokenizer=clip.tokenizer)
        x = sample_text2im(run.base.model, run.diffusion, run.base.tokenizer, batch, guidance_scale=args.guidance,
                           method=run.method, eta=args.eta, cond_fn=cond_fn, generator=run.generator,
                           device=run.device, progress=run.progress, forward_batch=args.forward_batch)
        images.append(run.upsample(batch, x).cpu())
    run.write(torch.cat(images), todo, "sample", {
        "per_prompt": per_prompt, "clip": str(clip.path) if clip else None,
        "clip_guidance": args.clip_guidance if clip else None})
    return 0


def run_inpaint(args) -> int:
    run = _Run(args, allowed_kinds=("base", "base-inpaint"))
    from training.sampling.editing import inpaint, inpaint_model_kwargs
    from training.sampling.guidance import text_model_fn
    from training.sampling.images import load_image, load_regenerate_mask

    size = run.base.model.image_size
    n = args.batch_size
    image = load_image(args.image, size).to(run.device).expand(n, -1, -1, -1)
    keep = (1.0 - load_regenerate_mask(args.mask, size)).to(run.device).expand(n, -1, -1, -1)
    finetuned = run.base.config.kind == "base-inpaint"
    mode = args.mode or ("finetuned" if finetuned else "replace")
    if mode == "finetuned" and not finetuned:
        from shards import UserError

        raise UserError(f"{args.model}: --mode finetuned needs an inpainting checkpoint (kind 'base-inpaint')")
    image_kwargs = inpaint_model_kwargs(image, keep) if finetuned else {}
    prompts = [args.prompt] * n
    model_fn = text_model_fn(run.base.model, run.base.tokenizer, prompts, args.guidance, device=run.device,
                             forward_batch=args.forward_batch, **image_kwargs)
    x = inpaint(run.diffusion, model_fn, image, keep, mode=mode, method=run.method, eta=args.eta,
                generator=run.generator, progress=run.progress)
    if run.up is not None:
        full_image = load_image(args.image, run.up.model.image_size).to(run.device).expand(n, -1, -1, -1)
        full_keep = (1.0 - load_regenerate_mask(args.mask, run.up.model.image_size)).to(run.device)
        x = run.upsample(prompts, x, full_image, full_keep.expand(n, -1, -1, -1))
    run.write(x.cpu(), prompts, "inpaint", {"image": args.image, "mask": args.mask, "mode": mode})
    return 0


def run_sdedit(args) -> int:
    from shards import UserError

    run = _Run(args, allowed_kinds=("base",))
    from training.sampling.editing import sdedit, sdedit_start_step
    from training.sampling.guidance import text_model_fn
    from training.sampling.images import load_image

    strength = args.strength if args.strength is not None or args.t_start is not None else 0.6
    try:
        start = sdedit_start_step(run.diffusion, strength=strength, t_start=args.t_start)
    except ValueError as e:
        raise UserError(f"--strength/--t-start: {e}") from None
    n = args.batch_size
    image = load_image(args.image, run.base.model.image_size).to(run.device).expand(n, -1, -1, -1)
    prompts = [args.prompt] * n
    model_fn = text_model_fn(run.base.model, run.base.tokenizer, prompts, args.guidance, device=run.device,
                             forward_batch=args.forward_batch)
    x = sdedit(run.diffusion, model_fn, image, start_step=start, method=run.method, eta=args.eta,
               generator=run.generator, progress=run.progress)
    x = run.upsample(prompts, x)
    run.write(x.cpu(), prompts, "sdedit", {"image": args.image, "strength": strength, "t_start": args.t_start,
                                           "start_step": start,
                                           "start_timestep": int(run.diffusion.timestep_map[start])})
    return 0
