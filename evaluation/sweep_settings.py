"""The settings of a guidance sweep: one classifier-free guidance scale each, or one CLIP guidance
scale (then without classifier-free guidance, as the paper samples CLIP guidance).

    parse_scales("1,2,3", "--guidance")         # [1.0, 2.0, 3.0]; UserError naming the flag otherwise
    sweep_settings([1, 3], [2])                  # [guidance-1, guidance-3, guidance-1-clip-2]

A setting's name ("guidance-3", "guidance-1-clip-2") is what REPORT/settings.json and
REPORT/samples/index.parquet call it (docs/evaluation.md, the report layout).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import shards as sh


def format_scale(value: float) -> str:
    """3.0 -> "3", 1.5 -> "1.5": names stay short and stable."""
    return f"{value:g}"


def parse_scales(text: str, flag: str) -> list[float]:
    """A comma-separated list of guidance scales (each > 0, finite, no repeats)."""
    parts = [p.strip() for p in str(text).split(",")]
    scales = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise sh.UserError(f"{flag}: {text!r} is not a comma-separated list of numbers (e.g. 1,2,3)") from None
        if not math.isfinite(value) or value <= 0:
            raise sh.UserError(f"{flag}: {part!r} is not a positive guidance scale")
        if value in scales:
            raise sh.UserError(f"{flag}: {part!r} is listed twice")
        scales.append(value)
    return scales


@dataclass(frozen=True)
class Setting:
    guidance: float
    clip_guidance: Optional[float] = None

    @property
    def name(self) -> str:
        name = f"guidance-{format_scale(self.guidance)}"
        return name if self.clip_guidance is None else f"{name}-clip-{format_scale(self.clip_guidance)}"

    def to_json(self) -> dict:
        return {"guidance": self.guidance, "clip_guidance": self.clip_guidance}


def sweep_settings(guidance: Sequence[float], clip_guidance: Sequence[float] = ()) -> list[Setting]:
    return [Setting(float(g)) for g in guidance] + [Setting(1.0, float(c)) for c in clip_guidance]
