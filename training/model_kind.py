"""`ModelKind`: the one spelling of what a GLIDE model is, shared by configs, checkpoints, the
trainer, the importers and the CLI.

The values are the strings model configs and checkpoints store (`"kind"` in a checkpoint's
config.json), so checkpoints written before this enum load unchanged. Older spellings a user may
still type (`glide train inpaint`, glide-text2im's `--kind upsample`) are accepted as `ALIASES`
by `parse_model_kind`, never written.
"""
from __future__ import annotations

from enum import Enum
from typing import Optional

from shards import UserError


class ModelKind(str, Enum):
    BASE = "base"  # 64x64 text-conditional diffusion model
    UPSAMPLER = "upsampler"  # 64 -> 256 text-conditional super-resolution
    BASE_INPAINT = "base-inpaint"  # base that also sees a masked image and its mask
    UPSAMPLER_INPAINT = "upsampler-inpaint"
    CLIP = "clip"  # the noised CLIP used for CLIP guidance

    # A kind prints as the string it is stored as, also in messages that quote it with !r.
    __str__ = str.__str__
    __format__ = str.__format__

    def __repr__(self) -> str:
        return repr(self.value)

    @property
    def inpaint(self) -> bool:
        """The network also sees a masked image and its mask (4 more input channels)."""
        return self in (ModelKind.BASE_INPAINT, ModelKind.UPSAMPLER_INPAINT)

    @property
    def super_res(self) -> bool:
        """The network also sees an upsampled low-resolution image (3 more input channels)."""
        return self in (ModelKind.UPSAMPLER, ModelKind.UPSAMPLER_INPAINT)

    @property
    def inpaint_variant(self) -> Optional["ModelKind"]:
        """base -> base-inpaint, upsampler -> upsampler-inpaint; None for the others."""
        return _INPAINT_VARIANT.get(self)

    @property
    def inpaint_source(self) -> Optional["ModelKind"]:
        """base-inpaint -> base, upsampler-inpaint -> upsampler; None for the others."""
        return _INPAINT_SOURCE.get(self)


_INPAINT_VARIANT = {ModelKind.BASE: ModelKind.BASE_INPAINT, ModelKind.UPSAMPLER: ModelKind.UPSAMPLER_INPAINT}
_INPAINT_SOURCE = {v: k for k, v in _INPAINT_VARIANT.items()}

# Spellings a user may still type: the trainer's former "inpaint" and glide-text2im's file kinds.
ALIASES = {"inpaint": ModelKind.BASE_INPAINT, "upsample": ModelKind.UPSAMPLER,
           "upsample-inpaint": ModelKind.UPSAMPLER_INPAINT}
NAMES = tuple(k.value for k in ModelKind)


def parse_model_kind(value: object, source: str = "model kind") -> ModelKind:
    """A ModelKind from its value or an alias; anything else is a UserError naming `source`."""
    if isinstance(value, ModelKind):
        return value
    if isinstance(value, str):
        if value in NAMES:
            return ModelKind(value)
        if value in ALIASES:
            return ALIASES[value]
    raise UserError(f"{source}: {value!r} is not a model kind (one of: {', '.join(NAMES)})")


def kind_help() -> str:
    """The kinds and accepted aliases, for CLI help."""
    aliases = ", ".join(f"{alias} = {kind.value}" for alias, kind in ALIASES.items())
    return f"one of: {', '.join(NAMES)} (also accepted: {aliases})"
