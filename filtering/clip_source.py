"""Which CLIP a `--clip MODEL` names: resolved and checked without loading any weights.

MODEL is one of
    ARCH=WEIGHTS    an open_clip architecture (a built-in name such as ViT-B-16, or an open_clip model
                    config .json file) with a local weights file (.bin / .pt / .pth / .safetensors).
                    OpenAI's weights need the QuickGELU variant (ViT-B-16-quickgelu=...).
    CHECKPOINT      a clean CLIP this project trained (`glide train clip --clip-mode clean`): its run
                    folder (latest export) or one checkpoint folder.
Nothing is downloaded: an open_clip pretrained tag is not a file, and is refused as one.

`resolve_clip(spec)` -> ClipSource: what the stage driver records in its manifest (`describe()`) and
what a worker loads (filtering.clip_models.load_encoder). Bad input is a one-line UserError naming it.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional

from shards import UserError, file_digest

OPEN_CLIP = "open_clip"
GLIDE_CLIP = "glide"
CLEAN_MODE = "clean"


@dataclass(frozen=True)
class ClipSource:
    """A resolved CLIP: `family` open_clip or glide; `arch` the open_clip name (or its config .json);
    `path` the weights file (open_clip) or the checkpoint folder (glide); `dim` the embedding width;
    `crop_size` the image side the encoder takes."""

    spec: str
    family: str
    path: str
    dim: int
    crop_size: int
    arch: Optional[str] = None
    details: dict = field(default_factory=dict)  # recorded as is by describe()

    @cached_property
    def weights_sha256(self) -> str:
        if self.family == GLIDE_CLIP:
            return self.details["weights_sha256"]  # the checkpoint's own record (verified on load)
        return file_digest(self.path).sha256

    @property
    def exact_spec(self) -> str:
        """A spec naming exactly these weights (a run folder's spec moves on with its newer exports)."""
        return self.path if self.family == GLIDE_CLIP else f"{self.arch}={self.path}"

    def describe(self) -> dict:
        """What a manifest or report records: which model and which exact weights
        (`load_clip_features(description["exact_spec"])` loads the same model again, from the same
        working directory). Paths under the working directory are recorded relative to it: a manifest
        then names the model as every node's copy of the checkout finds it (a cluster job's working
        dir), never by the absolute path of the machine that ran the stage."""
        path = _relative_to_cwd(self.path)
        exact = path if self.family == GLIDE_CLIP else f"{self.arch}={path}"
        out = {"spec": self.spec, "exact_spec": exact, "family": self.family}
        if self.arch is not None:
            out["arch"] = self.arch
        out.update(path=path, **self.details)
        out.update(weights_sha256=self.weights_sha256, dim=self.dim, crop_size=self.crop_size)
        return out


def _relative_to_cwd(path: str) -> str:
    p, cwd = Path(path), Path.cwd()
    return str(p.relative_to(cwd)) if p.is_absolute() and p.is_relative_to(cwd) else path


def resolve_clip(spec: str) -> ClipSource:
    """Parse and check `spec` (see the module doc); UserError naming what is wrong."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError("clip: empty model name (give ARCH=WEIGHTS_FILE or a CLIP checkpoint folder)")
    if "=" in spec:
        arch, weights = (s.strip() for s in spec.split("=", 1))
        return _open_clip_source(spec, arch, weights)
    if Path(spec).exists():
        return _glide_source(spec)
    if _open_clip_config(spec, must_exist=False) is not None:
        raise UserError(f"clip {spec!r}: an open_clip architecture needs a local weights file (nothing is "
                        f"downloaded): give {spec}=PATH (OpenAI weights: {_quickgelu_name(spec)}=PATH), or a "
                        f"CLIP checkpoint trained here (glide train clip --clip-mode clean)")
    raise UserError(f"clip {spec!r}: neither a CLIP checkpoint or run folder nor an open_clip architecture "
                    f"(give ARCH=WEIGHTS_FILE, e.g. ViT-B-16=/models/open_clip_pytorch_model.bin)")


# ---------------------------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------------------------
def _open_clip_source(spec: str, arch: str, weights: str) -> ClipSource:
    config = _open_clip_config(arch, must_exist=True)
    if arch.endswith(".json"):
        arch = str(Path(arch).expanduser().resolve())
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"{weights}: CLIP weights file not found (give a local file; nothing is downloaded)")
    if is_torchscript_archive(path) and not config.get("quick_gelu", False):
        fix = (f'set "quick_gelu": true in {arch}' if arch.endswith(".json")
               else f"use {_quickgelu_name(arch)}={weights}")
        raise UserError(f"{weights}: OpenAI CLIP weights (a TorchScript archive) need the QuickGELU variant: {fix}")
    vision = config.get("vision_cfg", {})
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    details = {"arch_config_sha256": file_digest(arch).sha256} if arch.endswith(".json") else {}
    return ClipSource(spec=spec, family=OPEN_CLIP, path=str(path.resolve()), dim=int(config["embed_dim"]),
                      crop_size=int(size), arch=arch, details=details)


def _open_clip_config(arch: str, must_exist: bool) -> Optional[dict]:
    """The open_clip model config of a built-in name or a config .json file."""
    if arch.endswith(".json"):
        path = Path(arch).expanduser()
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{arch}: open_clip model config not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{arch}: not a readable open_clip model config ({e})") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg")
                   if not isinstance(config, dict) or k not in config]
        if missing:
            raise UserError(f"{arch}: not an open_clip model config (no key {missing[0]!r})")
        return config
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None and must_exist:
        raise UserError(f"clip architecture {arch!r}: not an open_clip model (see open_clip.list_models(), "
                        f"or give an open_clip model config .json)")
    return config


def _quickgelu_name(arch: str) -> str:
    return arch if arch.endswith("-quickgelu") or arch.endswith(".json") else f"{arch}-quickgelu"


def is_torchscript_archive(path: Path) -> bool:
    """OpenAI's released CLIP files are TorchScript archives (code/ and constants.pkl in a zip)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# a CLIP this project trained
# ---------------------------------------------------------------------------------------------
def _glide_source(spec: str) -> ClipSource:
    from training.checkpoint import (checkpoint_kind, model_config_of, read_checkpoint_meta,
                                     resolve_checkpoint_dir, weights_file_name)
    from training.model_kind import ModelKind
    from training.noised_clip_config import noised_clip_config

    directory = resolve_checkpoint_dir(spec)
    meta = read_checkpoint_meta(directory)
    kind = checkpoint_kind(directory, meta)
    if kind != ModelKind.CLIP:
        raise UserError(f"{directory}: a {kind.value!r} checkpoint, not a CLIP")
    mode = clip_mode_of(meta)
    if mode != CLEAN_MODE:
        raise UserError(f"{directory}: a {mode} CLIP (trained on noised images x_t); image features need a clean "
                        f"one: train it with `glide train clip --clip-mode clean`")
    clip = noised_clip_config(model_config_of(directory, meta))
    weights = weights_file_name(meta, use_ema=True)
    details = {"step": meta.get("step"), "clip_mode": mode, "weights_file": weights,
               "weights_sha256": meta["files"][weights]["sha256"]}
    return ClipSource(spec=spec, family=GLIDE_CLIP, path=str(directory.resolve()), dim=clip.n_embd,
                      crop_size=clip.image_size, details=details)


def clip_mode_of(meta: dict) -> str:
    """The training mode a CLIP checkpoint records (`extra.train.clip_mode`); checkpoints written
    before the clean mode existed (and imported glide-text2im ones) are noised CLIPs."""
    train = (meta.get("extra") or {}).get("train") or {}
    return train.get("clip_mode", "noised")
