"""Random erased regions for inpainting: rectangles and free-form strokes.

Convention (glide-text2im's inpainting models and notebook): mask 1 = known pixels to keep,
0 = erased pixels the model fills; the model sees `inpaint_image = x0 * mask` and `inpaint_mask`.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from training.data.task import InpaintMaskSettings


def random_keep_mask(rng: np.random.Generator, size: int,
                     settings: InpaintMaskSettings) -> tuple[np.ndarray, str]:
    """A float32 [size, size] mask (1 keep, 0 erased) and its kind, "rect" or "stroke"."""
    erased = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(erased)
    if rng.random() < settings.rect_probability:
        kind = "rect"
        for _ in range(int(rng.integers(1, settings.max_rects + 1))):
            w, h = (int(round(size * rng.uniform(settings.rect_min_side, settings.rect_max_side)))
                    for _ in range(2))
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=255)
    else:
        kind = "stroke"
        for _ in range(int(rng.integers(1, settings.max_strokes + 1))):
            _draw_stroke(draw, rng, size, settings)
    keep = 1.0 - np.asarray(erased, dtype=np.float32) / 255.0
    if keep.min() > 0.5:  # a degenerate draw erased nothing: erase the centre quarter
        q = size // 4
        keep[q:size - q, q:size - q] = 0.0
    return (keep > 0.5).astype(np.float32), kind


def _draw_stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int,
                 s: InpaintMaskSettings) -> None:
    """One thick random polyline with round joints (a brush stroke)."""
    width = max(2, int(round(size * rng.uniform(*s.stroke_width))))
    x, y = rng.uniform(0, size), rng.uniform(0, size)
    angle = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(s.stroke_vertices[0], s.stroke_vertices[1] + 1))):
        angle += rng.uniform(-math.pi / 2, math.pi / 2)
        step = size * rng.uniform(*s.stroke_step)
        x = float(np.clip(x + step * math.cos(angle), 0, size - 1))
        y = float(np.clip(y + step * math.sin(angle), 0, size - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=width)
    r = width / 2
    for px, py in points:
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
