"""Drawing the sample world's scenes (`pipeline.sample_world.make_scene`) as images, and encoding them.

The palette every scene's colour names refer to; shapes, stand-ins and near misses drawn 4x
supersampled so edges are clean, items marked "occluded" under the shapes and the rest above them;
how much of an occluded item stays in view (`visible_fraction`).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

# Named colours, far apart in RGB so names are unambiguous to a viewer and a model.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (250, 220, 40),
    "green": (40, 165, 60),
    "blue": (35, 75, 220),
    "purple": (135, 50, 180),
    "pink": (245, 130, 195),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (135, 135, 135),
}
SUPERSAMPLE = 4


def _regular(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(math.radians(start_deg + 360 * k / n)),
             cy + r * math.sin(math.radians(start_deg + 360 * k / n))) for k in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        h = r * 0.85  # a square of "radius" r looks bigger than a circle of radius r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif kind == "triangle":  # pointing up; moved down so its box is centred
        draw.polygon(_regular(cx, cy + r * 0.25, r * 1.1, 3, -90), fill=fill)
    elif kind == "star":
        outer = _regular(cx, cy + r * 0.1, r * 1.05, 5, -90)
        inner = _regular(cx, cy + r * 0.1, r * 0.47, 5, -54)
        draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=fill)
    elif kind == "diamond":
        draw.polygon(_regular(cx, cy, r * 1.05, 4, -90), fill=fill)
    elif kind == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, 0), fill=fill)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def _axis(glyph: dict, cx: float, cy: float, h: float):
    a = math.radians(glyph.get("angle", 0.0))
    ca, sa = math.cos(a), math.sin(a)

    def at(u: float, v: float) -> tuple[float, float]:  # along the item's axis u, across v (units of h)
        return cx + h * (u * ca - v * sa), cy + h * (u * sa + v * ca)
    return at


def _draw_distractor(draw: ImageDraw.ImageDraw, glyph: dict, cx: float, cy: float, h: float) -> None:
    ink = PALETTE[glyph["ink"]]
    at = _axis(glyph, cx, cy, h)
    outline = (40, 40, 45)
    ow = max(1, round(h * 0.05))
    name = glyph["glyph"]
    if name == "snowman":  # round body parts where the stick figure has a head and limbs
        for oy, r in ((0.55, 0.42), (-0.1, 0.3), (-0.6, 0.22)):
            draw.ellipse((cx - r * h, cy + oy * h - r * h, cx + r * h, cy + oy * h + r * h), fill=ink)
    elif name == "lamp_post":  # an upright line with a lamp head: a stick figure's silhouette
        w = max(1, round(h * 0.13))
        draw.line([(cx, cy + 0.95 * h), (cx, cy - 0.55 * h)], fill=ink, width=w)
        draw.line([(cx, cy - 0.55 * h), (cx + 0.35 * h, cy - 0.55 * h)], fill=ink, width=w)
        draw.ellipse((cx + 0.2 * h, cy - 0.6 * h, cx + 0.5 * h, cy - 0.3 * h), fill=ink)
        draw.rectangle((cx - 0.3 * h, cy + 0.85 * h, cx + 0.3 * h, cy + 0.95 * h), fill=ink)
    elif name == "fork":  # the blade's colours and length, tines instead of an edge
        draw.polygon([at(-0.95, -0.08), at(0.15, -0.08), at(0.15, 0.08), at(-0.95, 0.08)],
                     fill=(205, 210, 220), outline=outline, width=ow)
        draw.polygon([at(0.15, -0.22), at(0.3, -0.22), at(0.3, 0.22), at(0.15, 0.22)],
                     fill=(205, 210, 220), outline=outline, width=ow)
        for v in (-0.18, -0.06, 0.06, 0.18):
            draw.line([at(0.3, v), at(0.95, v)], fill=outline, width=max(1, round(h * 0.07)))
    elif name == "pen":  # long, thin, pointed: the blade's outline without its guard
        draw.polygon([at(-0.95, -0.1), at(0.55, -0.1), at(0.55, 0.1), at(-0.95, 0.1)], fill=ink,
                     outline=outline, width=ow)
        draw.polygon([at(0.55, -0.1), at(0.95, 0.0), at(0.55, 0.1)], fill=(215, 190, 150), outline=outline)
        draw.polygon([at(-0.95, -0.12), at(-0.7, -0.12), at(-0.7, 0.12), at(-0.95, 0.12)], fill=outline)
    elif name in ("plus_sign", "cross"):  # bars where the marker has a ring and dots
        w = max(1, round(h * 0.3))
        turn = 45 if name == "cross" else 0
        bar = _axis({"angle": glyph.get("angle", 0.0) + turn}, cx, cy, h)
        draw.line([bar(-0.85, 0), bar(0.85, 0)], fill=ink, width=w)
        draw.line([bar(0, -0.85), bar(0, 0.85)], fill=ink, width=w)
    elif name == "ring":  # the marker's ring without its three dots
        w = max(1, round(h * 0.17))
        draw.ellipse((cx - 0.92 * h, cy - 0.92 * h, cx + 0.92 * h, cy + 0.92 * h), outline=ink, width=w)
    else:
        raise ValueError(f"unknown distractor {name!r}")


def _draw_glyph(draw: ImageDraw.ImageDraw, glyph: dict, cx: float, cy: float, h: float) -> None:
    if "category" not in glyph:
        _draw_distractor(draw, glyph, cx, cy, h)
        return
    ink = PALETTE[glyph["ink"]]
    if glyph["glyph"] == "stick_figure":
        w = max(1, round(h * 0.13))
        hr = h * 0.24
        draw.ellipse((cx - hr, cy - 0.9 * h, cx + hr, cy - 0.9 * h + 2 * hr), fill=ink)
        draw.line([(cx, cy - 0.45 * h), (cx, cy + 0.3 * h)], fill=ink, width=w)  # body
        draw.line([(cx - 0.5 * h, cy + 0.05 * h), (cx, cy - 0.3 * h), (cx + 0.5 * h, cy + 0.05 * h)],
                  fill=ink, width=w, joint="curve")  # arms
        draw.line([(cx - 0.42 * h, cy + 0.95 * h), (cx, cy + 0.3 * h), (cx + 0.42 * h, cy + 0.95 * h)],
                  fill=ink, width=w, joint="curve")  # legs
    elif glyph["glyph"] == "blade":
        at = _axis(glyph, cx, cy, h)
        outline = (40, 40, 45)
        ow = max(1, round(h * 0.05))
        draw.polygon([at(-0.95, -0.11), at(-0.45, -0.11), at(-0.45, 0.11), at(-0.95, 0.11)],
                     fill=(110, 60, 25), outline=outline, width=ow)  # handle
        draw.polygon([at(-0.47, -0.24), at(-0.37, -0.24), at(-0.37, 0.24), at(-0.47, 0.24)],
                     fill=outline)  # guard
        draw.polygon([at(-0.37, -0.14), at(0.95, -0.14), at(0.5, 0.15), at(-0.37, 0.15)],
                     fill=(205, 210, 220), outline=outline, width=ow)  # blade
    elif glyph["glyph"] == "marker":  # the designated stand-in: a ring around three dots
        w = max(1, round(h * 0.17))
        draw.ellipse((cx - 0.92 * h, cy - 0.92 * h, cx + 0.92 * h, cy + 0.92 * h), outline=ink, width=w)
        for px, py in _regular(cx, cy + 0.04 * h, 0.36 * h, 3, -90):
            dr = 0.17 * h
            draw.ellipse((px - dr, py - dr, px + dr, py + dr), fill=ink)
    else:
        raise ValueError(f"unknown glyph {glyph['glyph']!r}")


def render_scene(scene: dict, size: int) -> Image.Image:
    """Draw `scene` (see `make_scene`) as a size x size RGB image."""
    n = size * SUPERSAMPLE
    img = Image.new("RGB", (n, n), PALETTE[scene["background"]])
    draw = ImageDraw.Draw(img)
    items = scene["glyphs"] + scene.get("distractors", [])
    under = [g for g in items if g.get("occluded")]  # drawn first: a shape covers part of each
    for g in under:
        x, y = g["position"]
        _draw_glyph(draw, g, x * n, y * n, g["radius"] * n)
    for s in scene["shapes"]:
        x, y = s["position"]
        _draw_shape(draw, s["kind"], x * n, y * n, s["radius"] * n, PALETTE[s["colour"]])
    for g in items:
        if not g.get("occluded"):
            x, y = g["position"]
            _draw_glyph(draw, g, x * n, y * n, g["radius"] * n)
    return img.reduce(SUPERSAMPLE)


_SENTINEL = (1, 2, 3)  # a background no item or shape is drawn in
MASK_SIZE = 256        # resolution of visibility masks: fine enough for the smallest stand-in's strokes


def _painted(draw_on) -> np.ndarray:
    """bool [MASK_SIZE, MASK_SIZE]: the pixels `draw_on(draw, n)` paints on an empty canvas."""
    img = Image.new("RGB", (MASK_SIZE, MASK_SIZE), _SENTINEL)
    draw_on(ImageDraw.Draw(img), MASK_SIZE)
    return (np.asarray(img) != _SENTINEL).any(axis=-1)


def shapes_mask(shapes: list[dict]) -> np.ndarray:
    """bool [MASK_SIZE, MASK_SIZE]: where `shapes` cover the picture."""
    def draw_shapes(d, n):
        for s in shapes:
            _draw_shape(d, s["kind"], s["position"][0] * n, s["position"][1] * n, s["radius"] * n,
                        PALETTE[s["colour"]])
    return _painted(draw_shapes)


def visible_fraction(glyph: dict, shapes: list[dict], covered: np.ndarray | None = None) -> float:
    """Share of an item's ink left showing when `shapes` are drawn over it (1.0 for an item drawn
    above the shapes): what a viewer can see of it, not what the truth says is there. `covered`:
    `shapes_mask(shapes)` already made (one scene's candidates share it)."""
    if not glyph.get("occluded"):
        return 1.0
    x, y = glyph["position"]
    ink = _painted(lambda d, n: _draw_glyph(d, glyph, x * n, y * n, glyph["radius"] * n))
    covered = shapes_mask(shapes) if covered is None else covered
    return float((ink & ~covered).sum() / max(1, ink.sum()))


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=92, subsampling=0)  # 4:4:4 keeps coloured edges crisp
    else:
        img.save(buf, "PNG")
    return buf.getvalue()
