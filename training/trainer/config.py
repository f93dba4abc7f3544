"""`TrainConfig`: the `train` section of a pipeline config (and of `glide train` flags).

pydantic only (no torch): `pipeline.config` imports it at CLI start-up, and it travels to the Ray
Train workers as a plain dict (`model_dump()`), where `TrainConfig.model_validate` rebuilds it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from training.model_kind import ALIASES, NAMES, ModelKind

# The model config used when none is given: the tiny test/demo sizes.
DEFAULT_MODEL = {kind: "tiny-clip" if kind is ModelKind.CLIP else "tiny" for kind in ModelKind}


class TrainConfig(BaseModel):
    """Settings of one training run. Batch sizes are per worker; steps are optimizer steps."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: ModelKind = Field(
        ModelKind.BASE, description="what to train (the command's KIND argument; 'inpaint' = base-inpaint)")
    model: Union[str, dict[str, str]] = Field(
        "", description="model config: a shipped name (training/model_configs/), a JSON file or a checkpoint "
                        "folder; or a mapping from kind to one (\"\": tiny)")
    data: Optional[str] = Field(None, description="dataset folder with shards/ (--data)")
    output: Optional[str] = Field(None, description="run folder: checkpoints, exports, tensorboard (-o)")
    init: Optional[str] = Field(
        None, description="start from this checkpoint or run folder (inpaint kinds: converted with "
                          "zero-initialised extra input channels); ignored when the run resumes")
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (0: train on CPU)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves per worker")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage (0: plain data parallel)")
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "fp32", description="bf16, fp16 (dynamic loss scaling; GPU only) or fp32")
    batch_size: int = Field(8, ge=1, description="images per worker per micro-step")
    grad_accum: int = Field(1, ge=1, description="micro-steps accumulated per optimizer step")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up from 0 (steps)")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="learning rate after warm-up: constant, or decay to min_lr_ratio at max_steps")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr / peak lr for cosine and linear")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm to this (0: off)")
    ema_rate: float = Field(0.9999, ge=0, lt=1, description="EMA decay per optimizer step")
    ema_warmup: bool = Field(True, description="EMA decay min(ema_rate, (1+step)/(10+step)): short runs get a "
                                                "usable EMA")
    cfg_dropout: float = Field(0.2, ge=0, le=1,
                               description="fraction of captions replaced by the empty one (classifier-free guidance)")
    caption_clauses: float = Field(
        0.0, ge=0, le=1, description="kind clip only: chance that a caption of several comma-separated clauses is "
                                     "replaced by one of them (short captions teach what long ones mention in passing)")
    clip_mode: Literal["noised", "clean"] = Field(
        "noised", description="kind clip only: noised (GLIDE's CLIP for guidance, on x_t at random t) or clean "
                              "(on the clean images at t = 0: a CLIP for image features, e.g. glide embed)")
    p2_gamma: Union[NonNegativeFloat, dict[str, NonNegativeFloat]] = Field(
        0.0, description="P2 loss weighting 1/(p2_k + SNR)^gamma of L_simple over timesteps (0: uniform, as GLIDE; "
                         "1: emphasise the noisy steps); or a mapping from kind to it (missing kinds: 0)")
    p2_k: float = Field(1.0, gt=0, description="P2 weighting's k (see p2_gamma)")
    activation_checkpointing: bool = Field(False, description="recompute block activations in the backward pass")
    max_steps: Union[PositiveInt, dict[str, PositiveInt]] = Field(
        1000, description="train until this optimizer step; or a mapping from kind to it")
    save_every: int = Field(500, ge=1, description="checkpoint and export every N steps (and at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="DeepSpeed checkpoints kept (exports are all kept)")
    log_every: int = Field(10, ge=1, description="metrics every N steps")
    seed: int = Field(0, description="seed of initialisation, noise, timesteps and data order")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts after a failure (-1: unlimited)")
    peak_tflops: Optional[float] = Field(
        None, gt=0, description="device peak TFLOP/s per worker for MFU (default: known GPUs, CPU estimate)")
    random_crop: bool = Field(True, description="random crops of 80-100%% of the shorter side (else centre)")
    shuffle_buffer: int = Field(256, ge=0, description="rows each worker shuffles across shard boundaries")
    data_loop_period: float = Field(
        0.05, ge=0, description="minimum seconds per step of Ray Data's scheduling loop: a backpressured loop "
                                "otherwise spins on a core the trainer needs (0: Ray's own pace)")

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_alias(cls, value: Any) -> Any:
        return ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("model", "max_steps", "p2_gamma", mode="before")
    @classmethod
    def _kind_alias_keys(cls, value: Any) -> Any:
        """Per-kind mappings may use the aliases too ({inpaint: ...} is base-inpaint's)."""
        if isinstance(value, dict):
            return {ALIASES[k].value if k in ALIASES else k: v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        for key in ("model", "max_steps", "p2_gamma"):
            value = getattr(self, key)
            unknown = sorted(set(value) - set(NAMES)) if isinstance(value, dict) else []
            if unknown:
                raise ValueError(f"{key}: unknown kind {unknown[0]!r} (kinds: {', '.join(NAMES)})")
        return self

    def for_kind(self) -> "TrainConfig":
        """This config with per-kind values resolved for `kind` (max_steps and p2_gamma become numbers)."""
        update = {}
        if isinstance(self.max_steps, dict):
            if self.kind not in self.max_steps:
                from shards import UserError

                raise UserError(f"train.max_steps: no value for kind {self.kind!r} (give --max-steps)")
            update["max_steps"] = self.max_steps[self.kind]
        if isinstance(self.p2_gamma, dict):
            update["p2_gamma"] = self.p2_gamma.get(self.kind, 0.0)
        return self.model_copy(update=update) if update else self

    def model_name(self) -> str:
        """The model config for this run's kind."""
        name = self.model.get(self.kind, "") if isinstance(self.model, dict) else self.model
        return name or DEFAULT_MODEL[self.kind]

    @property
    def model_kind(self) -> ModelKind:
        """The model config's kind this run trains (the same enum as `kind`)."""
        return self.kind

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0
