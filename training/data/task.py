"""What a training run asks of the data: `TrainTask` (model kind, sizes, caption dropout, masks).

A `TrainTask` is plain data (picklable, no torch) so it travels to Ray Data tasks and Ray Train
workers unchanged. Every random choice the data pipeline makes (crop window, caption dropout,
erased region) is a pure function of (task.seed, epoch, row uid), so two runs with the same seed
see the same examples whatever the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from shards import UserError
from training.model_kind import ModelKind, parse_model_kind


@dataclass
class InpaintMaskSettings:
    """Random erased regions for the inpainting kinds (fractions are of the image side or area).

    Each example gets either rectangles (probability `rect_probability`) or free-form strokes
    (thick random polylines, as DeepFill-style free-form masks), so a batch holds both.
    """

    rect_probability: float = 0.5
    max_rects: int = 2
    rect_min_side: float = 0.2  # side of an erased rectangle, as a fraction of the image side
    rect_max_side: float = 0.7
    max_strokes: int = 3
    stroke_vertices: tuple[int, int] = (3, 7)  # vertices per stroke (min, max)
    stroke_width: tuple[float, float] = (0.06, 0.18)  # brush width, fraction of the image side
    stroke_step: tuple[float, float] = (0.1, 0.35)  # segment length, fraction of the image side


@dataclass
class TrainTask:
    """The data side of a training run.

    kind          a ModelKind (or its string; aliases such as "inpaint" accepted)
    image_size    side of the training image x0 (the upsampler's high resolution)
    low_res_size  side of the conditioning image (upsampler kinds only)
    text_ctx      token sequence length (the model's text_ctx)
    cfg_dropout   fraction of captions replaced by "" (classifier-free guidance; paper: 0.2)
    caption_clauses  kind clip: chance that a caption of several comma-separated clauses is replaced
                  by one of them, picked at random (see `training.data.batches.training_caption`)
    random_crop   True: random crop of 80-100% of the shorter side; False: resize + centre crop
    seed          seed of every random choice (crops, dropout, masks, shard order)
    shuffle_buffer rows each worker holds to shuffle across shard boundaries (0: shard order)
    decode_batch_size rows per decode call in the Ray Data map (trades overhead vs latency)
    data_loop_period minimum seconds per step of Ray Data's scheduling loop (training.data.loop_throttle)
    """

    kind: ModelKind = ModelKind.BASE
    image_size: int = 64
    low_res_size: Optional[int] = None
    text_ctx: int = 128
    cfg_dropout: float = 0.2
    caption_clauses: float = 0.0
    random_crop: bool = True
    seed: int = 0
    shuffle_buffer: int = 256
    decode_batch_size: int = 64
    data_loop_period: float = 0.0
    inpaint: InpaintMaskSettings = field(default_factory=InpaintMaskSettings)

    def __post_init__(self) -> None:
        self.kind = parse_model_kind(self.kind, "train task: kind")
        if self.image_size < 8:
            raise UserError(f"train task: image_size {self.image_size} is too small (>= 8)")
        if self.is_upsampler:
            if not self.low_res_size or not 0 < self.low_res_size < self.image_size:
                raise UserError(f"train task: kind {self.kind!r} needs 0 < low_res_size < image_size "
                                f"(got {self.low_res_size} and {self.image_size})")
        if not 0.0 <= self.cfg_dropout <= 1.0:
            raise UserError(f"train task: cfg_dropout {self.cfg_dropout} is not in [0, 1]")
        if not 0.0 <= self.caption_clauses <= 1.0:
            raise UserError(f"train task: caption_clauses {self.caption_clauses} is not in [0, 1]")
        if self.shuffle_buffer < 0 or self.decode_batch_size < 1 or self.text_ctx < 1 or self.data_loop_period < 0:
            raise UserError("train task: shuffle_buffer >= 0, decode_batch_size >= 1, text_ctx >= 1 and "
                            "data_loop_period >= 0")

    @property
    def is_upsampler(self) -> bool:
        return self.kind.super_res

    @property
    def is_inpaint(self) -> bool:
        return self.kind.inpaint

    @classmethod
    def for_model(cls, kind: str, model_cfg, **overrides) -> "TrainTask":
        """A task sized from a `training.model_config.ModelConfig` (image_size, text_ctx, low_res_size)."""
        low_res = (getattr(model_cfg, "extra", None) or {}).get("low_res_size")
        values = dict(kind=kind, image_size=model_cfg.image_size, text_ctx=model_cfg.text_ctx,
                      low_res_size=low_res)
        values.update(overrides)
        return cls(**values)
