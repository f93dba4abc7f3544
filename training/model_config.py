"""Model configs: the GLIDE network hyper-parameters as data.

`ModelConfig` mirrors glide-text2im's `model_and_diffusion_defaults()` field for field (same names,
same string formats for `channel_mult` and `attention_resolutions`) so a released option dict maps
onto it one to one, plus:
  kind            "base" | "upsampler" | "base-inpaint" | "upsampler-inpaint" | "clip"
  tokenizer       {"type": "gpt2"} or {"type": "clip"} (n_vocab must match it)
  learn_sigma     always true for GLIDE (6 output channels: eps, then the variance interpolation v)
  use_checkpoint  activation checkpointing per UNet / transformer block
  extra           kind-specific fields (e.g. the upsampler's "low_res_size", the noised CLIP's)

Named configs live in configs/models/<name>.json; keys starting with "_" (e.g. "_comment") are
documentation and ignored. Stdlib only: importing this never pulls in torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shards import UserError

KINDS = ("base", "upsampler", "base-inpaint", "upsampler-inpaint", "clip")
TOKENIZERS = ("gpt2", "clip")
# configs/models/ next to the package (source checkout / editable install).
MODELS_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"

# glide-text2im's default channel multipliers per image size (model_creation.create_model).
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass
class ModelConfig:
    kind: str = "base"
    image_size: int = 64
    num_channels: int = 192
    num_res_blocks: int = 3
    channel_mult: str = ""  # "" = glide's default for image_size, else e.g. "1,2,3,4"
    num_heads: int = 1
    num_head_channels: int = 64  # -1 = use num_heads
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"  # resolutions (pixels), not downsample rates
    dropout: float = 0.1
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    diffusion_steps: int = 1000
    noise_schedule: str = "squaredcos_cap_v2"
    timestep_respacing: str = ""
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False  # a hint for trainers/samplers on GPU; weights are built in float32
    cache_text_emb: bool = False  # kept for glide compatibility; pass text_emb= instead
    inpaint: bool | None = None  # None: derived from kind
    super_res: bool | None = None  # None: derived from kind
    n_vocab: int = 50257
    tokenizer: dict = field(default_factory=lambda: {"type": "gpt2"})
    learn_sigma: bool = True
    use_checkpoint: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate("model config")

    # ---- validation -------------------------------------------------------------------------
    def validate(self, source: str) -> None:
        """Check types and cross-field consistency; raise UserError naming `source` and the key."""
        for f in dataclasses.fields(self):
            _check_type(source, f.name, getattr(self, f.name), _FIELD_TYPES[f.name])
        if isinstance(self.channel_mult, (list, tuple)):
            self.channel_mult = ",".join(str(int(m)) for m in self.channel_mult)
        if isinstance(self.attention_resolutions, (list, tuple)):
            self.attention_resolutions = ",".join(str(int(r)) for r in self.attention_resolutions)
        if self.kind not in KINDS:
            raise UserError(f"{source}: key 'kind': {self.kind!r} is not one of {', '.join(KINDS)}")
        want_inpaint = self.kind.endswith("inpaint")
        want_super_res = self.kind.startswith("upsampler")
        if self.inpaint is None:
            self.inpaint = want_inpaint
        if self.super_res is None:
            self.super_res = want_super_res
        if self.kind != "clip":
            if self.inpaint != want_inpaint:
                raise UserError(f"{source}: key 'inpaint': {self.inpaint} contradicts kind {self.kind!r}")
            if self.super_res != want_super_res:
                raise UserError(f"{source}: key 'super_res': {self.super_res} contradicts kind {self.kind!r}")
        ttype = self.tokenizer.get("type")
        if ttype not in TOKENIZERS:
            raise UserError(f"{source}: key 'tokenizer.type': {ttype!r} is not one of {', '.join(TOKENIZERS)}")
        if not self.learn_sigma:
            raise UserError(f"{source}: key 'learn_sigma': GLIDE models learn the variance (must be true)")
        if self.kind == "clip":
            return  # the noised CLIP model validates its own fields (training.nn.noised_clip)
        try:
            mult = self.channel_mult_tuple()
            self.attention_downsample_rates()
        except ValueError as e:
            raise UserError(f"{source}: {e}") from None
        for name in ("num_channels", "num_res_blocks", "text_ctx", "n_vocab", "diffusion_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{source}: key '{name}': must be positive")
        for m in mult:
            if (m * self.num_channels) % 32:
                raise UserError(f"{source}: key 'num_channels': {self.num_channels} x {m} is not a "
                                "multiple of 32 (GroupNorm uses 32 groups)")
            if self.num_head_channels > 0 and (m * self.num_channels) % self.num_head_channels:
                raise UserError(f"{source}: key 'num_head_channels': does not divide "
                                f"{m * self.num_channels} channels")
        if self.xf_width and self.xf_width % max(self.xf_heads, 1):
            raise UserError(f"{source}: key 'xf_heads': {self.xf_heads} does not divide xf_width {self.xf_width}")

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
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> "ModelConfig":
        """Build from a dict; unknown keys or wrong types raise UserError naming key and `source`."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue  # documentation ("_comment")
            if key not in known:
                raise UserError(f"{source}: unknown key '{key}'")
            _check_type(source, key, value, _FIELD_TYPES[key])
            values[key] = value
        cfg = cls.__new__(cls)  # skip __init__ so validation errors name `source`
        for f in dataclasses.fields(cls):
            if f.name in values:
                v = values[f.name]
                v = dict(v) if isinstance(v, dict) else v
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                v = f.default_factory()  # type: ignore[misc]
            else:
                v = f.default
            setattr(cfg, f.name, v)
        cfg.validate(source)
        return cfg


# Accepted JSON types per field (bool is never accepted for int/float).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "image_size": (int,), "num_channels": (int,), "num_res_blocks": (int,),
    "channel_mult": (str, list, tuple), "num_heads": (int,), "num_head_channels": (int,),
    "num_heads_upsample": (int,), "attention_resolutions": (str, list, tuple), "dropout": (float, int),
    "text_ctx": (int,), "xf_width": (int,), "xf_layers": (int,), "xf_heads": (int,),
    "xf_final_ln": (bool,), "xf_padding": (bool,), "diffusion_steps": (int,), "noise_schedule": (str,),
    "timestep_respacing": (str,), "use_scale_shift_norm": (bool,), "resblock_updown": (bool,),
    "use_fp16": (bool,), "cache_text_emb": (bool,), "inpaint": (bool, type(None)),
    "super_res": (bool, type(None)), "n_vocab": (int,), "tokenizer": (dict,), "learn_sigma": (bool,),
    "use_checkpoint": (bool,), "extra": (dict,),
}


def _check_type(source: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok and isinstance(value, (list, tuple)):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise UserError(f"{source}: key '{key}': expected {names}, got {type(value).__name__} {value!r}")


def available_model_configs() -> list[str]:
    """Names of the configs in configs/models/."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def resolve_model_config_path(name_or_path: str | os.PathLike) -> Path:
    """A name in configs/models/, a JSON file, or a checkpoint folder holding config.json."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise UserError(f"{name_or_path}: folder has no config.json (not a checkpoint folder)")
        return path
    if path.is_file():
        return path
    named = MODELS_DIR / f"{name_or_path}.json"
    if "/" not in str(name_or_path) and named.is_file():
        return named
    raise UserError(f"{name_or_path}: no such model config (a file, a checkpoint folder, or one of: "
                    f"{', '.join(available_model_configs())})")


def load_model_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """Load a named config (configs/models/NAME.json), a JSON file, or a checkpoint folder.

    A checkpoint's config.json may hold the model config at top level or under "model".
    """
    path = resolve_model_config_path(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    return ModelConfig.from_dict(data, source=str(path))
