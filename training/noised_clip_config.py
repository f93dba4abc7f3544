"""`NoisedClipConfig`: the sizes of GLIDE's noised CLIP, validated by pydantic (no torch).

In a model config (kind "clip") five of them are the model config's own top-level fields
(`TOP_LEVEL_FIELDS`); the rest are its `extra`. The defaults are the released glide-text2im noised
CLIP (`training/model_configs/glide-filtered-clip.json`, from glide's `clip/config.yaml`). Bad
values are one-line UserErrors naming the key as the user wrote it (`extra.patch_size`, `text_ctx`).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from shards import UserError
from training.config_errors import user_error

# The CLIP's sizes that ModelConfig already has as top-level fields: ours -> ModelConfig's.
TOP_LEVEL_FIELDS = {"image_size": "image_size", "n_vocab": "n_vocab", "max_text_len": "text_ctx",
                    "n_timesteps": "diffusion_steps", "beta_schedule": "noise_schedule"}
LOGIT_SCALE_MAX = 100.0  # CLIP's clamp on the learned temperature; glide's fixed value
CLIP_BPE_VOCAB = 49408  # ids of the CLIP BPE tokenizer (glide's simple_tokenizer, open_clip's)


class NoisedClipConfig(BaseModel):
    """Sizes of the noised CLIP; the defaults are the released glide-text2im model."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    image_size: PositiveInt = 64
    patch_size: PositiveInt = 4
    # how pixels become patch tokens: "linear" (ViT's and glide's: one strided projection) or "conv"
    # (stride-2 3x3 convolutions, log2(patch_size) of them: "early convolutions", which a small image
    # tower trained from scratch on few images learns small objects with far sooner)
    patch_stem: Literal["linear", "conv"] = "linear"
    # the image tower: "vit" (glide's: patches, timestep token, transformer blocks; the n_*_image and
    # patch sizes) or "conv" (training.nn.clip_encoders.ConvImageEncoder: a small CNN with a global max
    # pool, one block per conv_widths entry; the sizes a CLIP trained from scratch on the sample world
    # learns its small stand-ins with: see docs/filtering.md)
    image_tower: Literal["vit", "conv"] = "vit"
    conv_widths: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 128, 128], min_length=1)
    n_vocab: PositiveInt = 65536  # embedding rows; the CLIP BPE uses the first 49408
    max_text_len: PositiveInt = 77  # text context, SOT + up to 75 tokens + EOT, zero padded
    n_embd: PositiveInt = 512  # joint embedding width
    n_head_state_text: PositiveInt = 64
    n_head_text: PositiveInt = 8
    n_xf_blocks_text: PositiveInt = 12
    n_head_state_image: PositiveInt = 64
    n_head_image: PositiveInt = 12
    n_xf_blocks_image: PositiveInt = 12
    n_timesteps: PositiveInt = 1000  # rows of the timestep table: the diffusion's (unrespaced) steps
    beta_schedule: str = "squaredcos_cap_v2"  # the noise schedule the model was trained under
    # initial exp(logit_scale) (clamped at LOGIT_SCALE_MAX, as in CLIP)
    logit_scale: PositiveFloat = Field(100.0, le=LOGIT_SCALE_MAX)
    learn_logit_scale: bool = False  # glide keeps it fixed
    # the contrastive loss: "softmax" (CLIP's InfoNCE, glide's) or "sigmoid" (SigLIP, Zhai et al. 2023:
    # every image-text pair its own binary decision, sigmoid(scale * cos + bias)). With many positives
    # per text ("with a knife" true of every knife image) softmax splits one unit of target over them
    # and a hard positive (a small or covered stand-in) gets a share of it; sigmoid asks each of them
    # to be a match on its own, as a detector's per-image loss does.
    contrastive_loss: Literal["softmax", "sigmoid"] = "softmax"
    logit_bias: float = -10.0  # initial bias of the sigmoid loss's logits (SigLIP's); learned; unused by softmax

    @model_validator(mode="after")
    def _check_patches(self) -> "NoisedClipConfig":
        if self.image_tower == "conv":  # patch_size and patch_stem are the ViT tower's: unused here
            if self.image_size % (1 << len(self.conv_widths)):
                raise ValueError(f"key 'conv_widths': {len(self.conv_widths)} blocks halve the image that many "
                                 f"times, and image_size {self.image_size} is not a multiple of {1 << len(self.conv_widths)}")
            return self
        if self.image_size % self.patch_size:
            raise ValueError(f"key 'image_size': {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.patch_stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"key 'patch_size': {self.patch_size} with patch_stem 'conv' must be a power of 2 (>= 2)")
        return self

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], source: str = "model config", key_name=None
                    ) -> "NoisedClipConfig":
        """Typed construction; an unknown field or a bad value raises a UserError naming it.

        key_name: maps our field names to the ones `source` spells (see noised_clip_config).
        """
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as e:
            raise user_error(e, source, key_name) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_model_config(self):
        """The ModelConfig (kind "clip", CLIP tokenizer) describing this model."""
        from training.model_config import ModelConfig

        fields = self.to_dict()
        top = {theirs: fields.pop(ours) for ours, theirs in TOP_LEVEL_FIELDS.items()}
        return ModelConfig(kind="clip", tokenizer={"type": "clip"}, extra=fields, **top)


def _model_config_key(key: str) -> str:
    """Our field name -> the model config key holding it ("max_text_len" -> "text_ctx")."""
    head, _, rest = key.partition(".")
    if head in TOP_LEVEL_FIELDS:
        return TOP_LEVEL_FIELDS[head] + (f".{rest}" if rest else "")
    return f"extra.{key}"


def noised_clip_config(cfg: Any, source: str = "model config (kind clip)") -> NoisedClipConfig:
    """NoisedClipConfig from a ModelConfig of kind "clip", a mapping of its fields, or itself.

    In a ModelConfig, image_size, n_vocab, text_ctx (= max_text_len), diffusion_steps
    (= n_timesteps) and noise_schedule (= beta_schedule) are its top-level fields, the rest are in
    `extra`; errors name them so.
    """
    if isinstance(cfg, NoisedClipConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return NoisedClipConfig.from_fields(cfg)
    if getattr(cfg, "kind", None) != "clip":
        raise UserError(f"{source}: kind is {getattr(cfg, 'kind', None)!r}, expected 'clip'")
    extra = dict(cfg.extra or {})
    for key in extra:
        if key in TOP_LEVEL_FIELDS or key in TOP_LEVEL_FIELDS.values():
            raise UserError(f"{source}: key 'extra.{key}': set it as the top-level key "
                            f"{TOP_LEVEL_FIELDS.get(key, key)!r}")
    fields = {ours: getattr(cfg, theirs) for ours, theirs in TOP_LEVEL_FIELDS.items()}
    fields.update(extra)
    clip_cfg = NoisedClipConfig.from_fields(fields, source, _model_config_key)
    if cfg.tokenizer.get("type") != "clip":
        raise UserError(f"{source}: key 'tokenizer.type': the noised CLIP reads CLIP BPE ids, "
                        f"set {{\"type\": \"clip\"}}")
    if clip_cfg.n_vocab < CLIP_BPE_VOCAB:
        raise UserError(f"{source}: key 'n_vocab': {clip_cfg.n_vocab} is smaller than the CLIP "
                        f"tokenizer's {CLIP_BPE_VOCAB} ids")
    return clip_cfg
