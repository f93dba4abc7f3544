"""Model configs: the GLIDE network hyper-parameters as data, validated by pydantic.

`ModelConfig` mirrors glide-text2im's `model_and_diffusion_defaults()` field for field (same names,
same string formats for `channel_mult` and `attention_resolutions`) so a released option dict maps
onto it one to one, plus:
  kind            a `ModelKind`: base | upsampler | base-inpaint | upsampler-inpaint | clip
  tokenizer       {"type": "gpt2"} or {"type": "clip"} (n_vocab must match it)
  learn_sigma     always true for GLIDE (6 output channels: eps, then the variance interpolation v)
  use_checkpoint  activation checkpointing per UNet / transformer block
  extra           kind-specific fields (e.g. the upsampler's "low_res_size", the noised CLIP's)

Named configs are package data, `training/model_configs/<name>.json`, read through
importlib.resources so an installed (non-editable) package finds them too. Keys starting with "_"
(e.g. "_comment") are documentation and ignored. Values are checked strictly (a JSON "3" is not an
int); a bad file is a one-line UserError `FILE: key 'K': what is wrong`. Importing this never pulls
in torch.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shards import UserError
from training.config_errors import user_error
from training.model_kind import ModelKind

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

TOKENIZERS = ("gpt2", "clip")
# The named configs shipped inside the package (training/model_configs/*.json).
NAMED_CONFIGS: Traversable = resources.files("training.model_configs")

# glide-text2im's default channel multipliers per image size (model_creation.create_model).
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


class ModelConfig(BaseModel):
    # strict: JSON "192" or true is not an int; kind is the exception (stored as its string value)
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: ModelKind = Field(ModelKind.BASE, strict=False)
    image_size: int = Field(64, gt=0)
    num_channels: int = Field(192, gt=0)
    num_res_blocks: int = Field(3, gt=0)
    channel_mult: str = ""  # "" = glide's default for image_size, else e.g. "1,2,3,4" (or a list)
    num_heads: int = 1
    num_head_channels: int = 64  # -1 = use num_heads
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"  # resolutions (pixels), not downsample rates (or a list)
    dropout: float = 0.1
    text_ctx: int = Field(128, gt=0)
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    diffusion_steps: int = Field(1000, gt=0)
    noise_schedule: str = "squaredcos_cap_v2"
    timestep_respacing: str = ""
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False  # a hint for trainers/samplers on GPU; weights are built in float32
    cache_text_emb: bool = False  # kept for glide compatibility; pass text_emb= instead
    inpaint: Optional[bool] = None  # None (or left out): derived from kind
    super_res: Optional[bool] = None  # None (or left out): derived from kind
    n_vocab: int = Field(50257, gt=0)
    tokenizer: dict = Field(default_factory=lambda: {"type": "gpt2"})
    learn_sigma: bool = True
    use_checkpoint: bool = False
    extra: dict = Field(default_factory=dict)

    # ---- validation -------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _derive_variant_flags(cls, values: Any) -> Any:
        """inpaint / super_res left out or null: take them from kind."""
        if not isinstance(values, dict):
            return values
        try:
            kind = ModelKind(values.get("kind", ModelKind.BASE))
        except ValueError:
            return values  # the kind field reports it
        values = dict(values)
        for flag in ("inpaint", "super_res"):
            if values.get(flag) is None:
                values[flag] = getattr(kind, flag)
        return values

    @field_validator("channel_mult", "attention_resolutions", mode="before")
    @classmethod
    def _join_int_list(cls, value: Any) -> Any:
        """[1, 2, 2] -> "1,2,2" (glide's own format is the string)."""
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError("a list must hold integers only")
            return ",".join(str(v) for v in value)
        return value

    @model_validator(mode="after")
    def _check_consistency(self, info: ValidationInfo) -> "ModelConfig":
        kind = self.kind
        if kind is not ModelKind.CLIP:
            for flag in ("inpaint", "super_res"):
                if getattr(self, flag) != getattr(kind, flag):
                    raise ValueError(f"key '{flag}': {getattr(self, flag)} contradicts kind {kind.value!r}")
        ttype = self.tokenizer.get("type")
        if ttype not in TOKENIZERS:
            raise ValueError(f"key 'tokenizer.type': {ttype!r} is not one of {', '.join(TOKENIZERS)}")
        if not self.learn_sigma:
            raise ValueError("key 'learn_sigma': GLIDE models learn the variance (must be true)")
        if kind is ModelKind.CLIP:
            from training.noised_clip_config import noised_clip_config

            source = (info.context or {}).get("source", "model config")
            noised_clip_config(self, source)  # its sizes: a UserError naming source and the key
            return self
        mult = self.channel_mult_tuple()
        self.attention_downsample_rates()
        for m in mult:
            if (m * self.num_channels) % 32:
                raise ValueError(f"key 'num_channels': {self.num_channels} x {m} is not a multiple of 32 "
                                 "(GroupNorm uses 32 groups)")
            if self.num_head_channels > 0 and (m * self.num_channels) % self.num_head_channels:
                raise ValueError(f"key 'num_head_channels': does not divide {m * self.num_channels} channels")
        if self.xf_width and self.xf_width % max(self.xf_heads, 1):
            raise ValueError(f"key 'xf_heads': {self.xf_heads} does not divide xf_width {self.xf_width}")
        return self

    # ---- derived values ---------------------------------------------------------------------
    def channel_mult_tuple(self) -> tuple[int, ...]:
        """Channel multiplier per UNet level (glide's rule when channel_mult is "")."""
        if self.channel_mult == "":
            if self.image_size not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"key 'channel_mult': no default for image_size {self.image_size}; "
                                 "set it, e.g. \"1,2,2\"")
            return DEFAULT_CHANNEL_MULT[self.image_size]
        try:
            return tuple(int(m) for m in self.channel_mult.split(","))
        except ValueError:
            raise ValueError(f"key 'channel_mult': {self.channel_mult!r} is not a comma-separated "
                             "list of integers") from None

    def attention_downsample_rates(self) -> tuple[int, ...]:
        """attention_resolutions (pixels) -> downsample rates, as glide's create_model."""
        if not self.attention_resolutions:
            return ()
        try:
            res = [int(r) for r in self.attention_resolutions.split(",")]
        except ValueError:
            raise ValueError(f"key 'attention_resolutions': {self.attention_resolutions!r} is not a "
                             "comma-separated list of integers") from None
        if any(r <= 0 or self.image_size % r for r in res):
            raise ValueError(f"key 'attention_resolutions': each must divide image_size {self.image_size}")
        return tuple(self.image_size // r for r in res)

    @property
    def in_channels(self) -> int:
        """Channels the network's first conv sees: x, [masked image + mask], [upsampled low-res]."""
        return 3 + (4 if self.inpaint else 0) + (3 if self.super_res else 0)

    # ---- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (kind as its string), in field order."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with `changes` (pass inpaint=None, super_res=None to re-derive them)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: Any, source: str = "model config") -> "ModelConfig":
        """Build from a dict; unknown keys or bad values raise a UserError naming key and `source`."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}")
        values = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("_"))}
        try:
            return cls.model_validate(values, context={"source": source})
        except ValidationError as e:
            raise user_error(e, source) from None


def available_model_configs() -> list[str]:
    """Names of the configs shipped in training/model_configs/."""
    return sorted(p.name[:-len(".json")] for p in NAMED_CONFIGS.iterdir() if p.name.endswith(".json"))


def resolve_model_config_path(name_or_path: str | os.PathLike) -> Path | Traversable:
    """A JSON file, a checkpoint folder holding config.json, or the name of a shipped config."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise UserError(f"{name_or_path}: folder has no config.json (not a checkpoint folder)")
        return path
    if path.is_file():
        return path
    name = str(name_or_path)
    if "/" not in name and os.sep not in name and name not in ("", ".", ".."):
        named = NAMED_CONFIGS / f"{name}.json"
        if named.is_file():
            return named
    raise UserError(f"{name_or_path}: no such model config (a file, a checkpoint folder, or one of: "
                    f"{', '.join(available_model_configs())})")


def load_model_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """Load a shipped config by name (e.g. "tiny"), a JSON file, or a checkpoint folder.

    A checkpoint's config.json may hold the model config at top level or under "model".
    """
    path = resolve_model_config_path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    return ModelConfig.from_dict(data, source=str(path))
