"""The sample world: a synthetic captioned image world, a pure function of a seed.

Each image is a scene of coloured shapes on a flat coloured background, captioned
from the scene ("a small red circle above a large blue square on a green
background"). Some images also carry stand-ins for the three filtered categories:
a stick figure (people), a blade glyph (violence) and a designated marker glyph,
a ring around three dots (hate symbols). They are drawn so that a filter has to
learn them: at several sizes (sometimes small), in several ink colours, anywhere
in the image among the shapes, sometimes partly covered by a shape; and other
images carry near misses that look alike (a snowman or a lamp post near the stick
figure, a fork or a pen near the blade, a plus sign, a cross or a plain ring near
the marker). The caption mentions a stand-in only sometimes, and now and then
mentions one that is not there. The ground truth lives in `truth.parquet`:

    image_id   "000042"                  path      "images/000042.jpg" (relative)
    caption    the text a crawler sees   scene     JSON, see `make_scene`
    people, violence, hate   bool        mentioned list of categories the caption names
    distractors  list of near-miss glyphs drawn   format, width, height, n_shapes

Layout of a world directory:

    DIR/images/<image_id>.jpg|png   DIR/truth.parquet   DIR/index.html (first images, for people)
    DIR/world.json                  written last: the generating config and counts
    DIR/urls.parquet                `write_url_list`, once a server address is known

Same seed and config => byte-identical files; a one-shape scene is one big centred shape. The
scenes are drawn by `pipeline.sample_render`.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.sample_render import PALETTE, encode, render_scene, shapes_mask, visible_fraction
from shards import UserError, atomic_open, write_json_atomic

WORLD_FORMAT = "glide-sample-world"
WORLD_VERSION = 2

SHAPE_KINDS = ("circle", "square", "triangle", "star", "diamond", "hexagon")
SIZES = ("small", "large")
RELATIONS = ("to the left of", "to the right of", "above", "below")
CATEGORIES = ("people", "violence", "hate")
INK_CONTRAST = 70  # least luminance difference between an item's ink and what it is drawn on
GLYPHS = {"people": "stick_figure", "violence": "blade", "hate": "marker"}
# Near misses: look-alikes of each category's stand-in that are not it (negatives a filter must pass).
DISTRACTORS = {"people": ("snowman", "lamp_post"), "violence": ("fork", "pen"),
               "hate": ("plus_sign", "cross", "ring")}
CATEGORY_PHRASES = {"people": "a person", "violence": "a knife", "hate": "a strange symbol"}

# Config keys that define the world (the rest, e.g. host/port, only affect serving).
WORLD_KEYS = ("count", "seed", "image_size", "max_shapes", "people_fraction", "violence_fraction",
              "hate_fraction", "caption_mentions_fraction", "false_mention_fraction", "distractor_fraction",
              "png_fraction", "standin_scale")

GLYPH_RADIUS = (0.085, 0.16)   # half-extent of a stand-in, in image units ...
SMALL_GLYPH_RADIUS = (0.06, 0.085)  # ... and of the one in four drawn small
OCCLUDED_FRACTION = 0.25       # stand-ins partly covered by a shape ...
MIN_VISIBLE = 0.7              # ... which still shows this share of its ink: legs alone under a square are no
                               # person a rater would see, yet the truth would call them one
_IMAGE_NAME = re.compile(r"^\d{6,}\.(jpg|png)$")


def derive_rng(seed: int, *parts) -> random.Random:
    """An independent RNG for (seed, parts): stable across runs, platforms and Python versions."""
    text = ":".join(str(p) for p in ("sample-world", seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


# ---------------------------------------------------------------- scene model

def _shape(kind: str, colour: str, size: str, x: float, y: float, radius: float) -> dict:
    return {"kind": kind, "colour": colour, "size": size,
            "position": [round(x, 4), round(y, 4)], "radius": round(radius, 4)}


def _layout_shapes(rng: random.Random, n: int, colours: list[str]) -> tuple[list[dict], str | None]:
    """Shapes in unit coordinates (x right, y down) and the relation of a 2-shape scene."""
    kinds = [rng.choice(SHAPE_KINDS) for _ in range(n)]
    if n == 1:  # big and clean: what a tiny model learns first
        return [_shape(kinds[0], colours[0], "large", 0.5 + rng.uniform(-0.04, 0.04),
                       0.5 + rng.uniform(-0.04, 0.04), 0.3)], None
    sizes = [rng.choice(SIZES) for _ in range(n)]
    if n == 2:
        relation = rng.choice(RELATIONS)
        first_low = relation in ("to the left of", "above")  # first shape at the smaller coordinate
        along = (0.27, 0.73) if first_low else (0.73, 0.27)
        shapes = []
        for k in range(2):
            r = 0.21 if sizes[k] == "large" else 0.12
            a, c = along[k], 0.5 + rng.uniform(-0.08, 0.08)
            x, y = (a, c) if relation in ("to the left of", "to the right of") else (c, a)
            shapes.append(_shape(kinds[k], colours[k], sizes[k], x, y, r))
        return shapes, relation
    cell = 1.0 / n  # a row, described left to right
    return [_shape(kinds[k], colours[k], sizes[k], (k + 0.5) * cell, 0.5 + rng.uniform(-0.1, 0.1),
                   cell * (0.42 if sizes[k] == "large" else 0.27)) for k in range(n)], None


def _luminance(colour: str) -> float:
    r, g, b = PALETTE[colour]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _contrasting_ink(rng: random.Random, background: str, beneath: Iterable[str] = ()) -> str:
    """A palette colour that stands out (luminance apart) on `background` and on every colour in
    `beneath` (the shapes the item overlaps): a stick figure drawn gray on a gray square is in the
    truth but in no pixel, a positive no labeller or filter could find. Where no colour is far enough
    from all of them, the one farthest from the nearest."""
    under = {background, *beneath}
    choices = [c for c in PALETTE if all(abs(_luminance(c) - _luminance(u)) > INK_CONTRAST for u in under)]
    if choices:
        return rng.choice(choices)
    return max(PALETTE, key=lambda c: min(abs(_luminance(c) - _luminance(u)) for u in under))


def _overlapped_colours(x: float, y: float, r: float, shapes: list[dict]) -> list[str]:
    """Colours of the shapes whose extent meets an item of half-extent r at (x, y)."""
    return [s["colour"] for s in shapes if math.hypot(x - s["position"][0], y - s["position"][1]) < s["radius"] + r]


def _place(rng: random.Random, r: float, shapes: list[dict], taken: list[dict]) -> tuple[float, float] | None:
    """A centre for an item of half-extent r: inside the image, off every shape's centre (so the
    shape keeps its captioned colour there) and clear of the items already placed."""
    for _ in range(80):
        x, y = rng.uniform(r + 0.02, 0.98 - r), rng.uniform(r + 0.02, 0.98 - r)
        if all(math.hypot(x - s["position"][0], y - s["position"][1]) > 1.1 * r + 0.03 for s in shapes) and \
                all(math.hypot(x - t["position"][0], y - t["position"][1]) > r + t["radius"] for t in taken):
            return x, y
    return None


def _beside_shape(rng: random.Random, r: float, shapes: list[dict], taken: list[dict], shows_enough):
    """A centre where a shape covers part of the item, at the shape's rim, off its centre, and
    `shows_enough(x, y)` of it stays in view."""
    for _ in range(40):
        s = rng.choice(shapes)
        a = rng.uniform(0, 2 * math.pi)
        d = s["radius"] + 0.45 * r
        x, y = s["position"][0] + d * math.cos(a), s["position"][1] + d * math.sin(a)
        inside = r * 0.6 <= x <= 1 - r * 0.6 and r * 0.6 <= y <= 1 - r * 0.6
        if inside and d > 1.1 * r and all(math.hypot(x - t["position"][0], y - t["position"][1]) > r + t["radius"]
                                          for t in taken) and shows_enough(x, y):
            return x, y
    return None


def _item_angle(rng: random.Random, name: str) -> float:
    if name in ("blade", "fork", "pen"):
        return rng.uniform(-180, 180)
    if name in ("cross", "plus_sign"):
        return rng.uniform(-15, 15)
    return 0.0


def _glyph(rng: random.Random, name: str, category: str | None, background: str, shapes: list[dict],
           taken: list[dict], scale: float = 1.0) -> dict | None:
    lo, hi = SMALL_GLYPH_RADIUS if rng.random() < 0.25 else GLYPH_RADIUS
    r = rng.uniform(lo, hi) * scale
    angle = _item_angle(rng, name)
    covered = None  # the shapes' mask, drawn at the first candidate and shared by the rest

    def shows_enough(x: float, y: float) -> bool:
        nonlocal covered
        if covered is None:
            covered = shapes_mask(shapes)
        under = {"glyph": name, "ink": "black", "position": [round(x, 4), round(y, 4)], "radius": round(r, 4),
                 "angle": round(angle, 2), "occluded": True} | ({"category": category} if category else {})
        return visible_fraction(under, shapes, covered) >= MIN_VISIBLE

    at = _beside_shape(rng, r, shapes, taken, shows_enough) if rng.random() < OCCLUDED_FRACTION else None
    occluded = at is not None
    at = at or _place(rng, r, shapes, taken)
    if at is None:
        return None
    ink = _contrasting_ink(rng, background, _overlapped_colours(at[0], at[1], r, shapes))
    item = {"glyph": name, "ink": ink, "position": [round(at[0], 4), round(at[1], 4)],
            "radius": round(r, 4), "angle": round(angle, 2), "occluded": occluded}
    if category is not None:
        item["category"] = category
    return item


def _first_fit(rng: random.Random, name: str, category: str | None, background: str, shapes: list[dict],
               taken: list[dict], scales: Iterable[float]) -> dict | None:
    """The first glyph that finds room, one draw of size and position per scale tried."""
    for scale in scales:
        g = _glyph(rng, name, category, background, shapes, taken, scale)
        if g is not None:
            return g
    return None


def make_scene(rng: random.Random, max_shapes: int, categories: Iterable[str] = (),
               distractors: Iterable[str] = (), standin_scale: float = 1.0) -> dict:
    """A random scene. Returns the JSON-able truth the image is rendered from:

    {"background": "blue", "relation": "above" | None,
     "shapes": [{"kind", "colour", "size", "position": [x, y], "radius"}, ...],
     "glyphs": [{"category", "glyph", "ink", "position": [x, y], "radius", "angle", "occluded"}, ...],
     "distractors": [{"glyph", "ink", "position", "radius", "angle", "occluded"}, ...]}
    Positions are centres in [0, 1] image coordinates (y down); radius is half the extent. A
    glyph with "occluded" is drawn under the shapes, at a shape's rim, so the shape covers part of it
    (never more than 1 - MIN_VISIBLE of its ink).
    `standin_scale` multiplies the size of stand-ins and near misses (a world for small images).
    """
    background = rng.choice(list(PALETTE))
    n = rng.randint(1, max_shapes)
    colours = rng.sample([c for c in PALETTE if c != background], n)
    shapes, relation = _layout_shapes(rng, n, colours)
    # Stand-ins and near misses go among the shapes, never moving them: a scene laid out differently
    # when a stand-in is present would be a cue a filter could learn instead of the stand-in itself.
    glyphs, placed = [], []
    # A crowded scene may need another draw of size and position, and a scaled-up stand-in a smaller one.
    standin_scales = (standin_scale,) * 5 + (1.0,) * 5
    for cat in [c for c in CATEGORIES if c in set(categories)]:
        g = _first_fit(rng, GLYPHS[cat], cat, background, shapes, placed, standin_scales)
        if g is None:
            raise RuntimeError(f"no room for the {cat} stand-in")  # cannot happen with <= 4 shapes
        glyphs.append(g)
        placed.append(g)
    near = []
    # Near misses shrink back like stand-ins do, so both keep the same sizes; at the default scale, one try.
    near_scales = (standin_scale,) * 5 + (1.0,) if standin_scale != 1.0 else (1.0,)
    for name in distractors:
        d = _first_fit(rng, name, None, background, shapes, placed, near_scales)
        if d is not None:  # a near miss that finds no room is simply left out (the truth says so)
            near.append(d)
            placed.append(d)
    return {"background": background, "relation": relation, "shapes": shapes, "glyphs": glyphs,
            "distractors": near}


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def describe_scene(scene: dict) -> str:
    """The scene part of a caption, e.g. 'a small red circle above a large blue square on a green background'."""
    shapes = scene["shapes"]
    bg = f"on {_a(scene['background'])} background"
    if len(shapes) == 1:
        s = shapes[0]
        return f"{_a(s['colour'])} {s['kind']} {bg}"
    names = [f"a {s['size']} {s['colour']} {s['kind']}" for s in shapes]
    if len(shapes) == 2:
        return f"{names[0]} {scene['relation']} {names[1]} {bg}"
    return f"{', '.join(names[:-1])} and {names[-1]} from left to right {bg}"


def caption_for(scene: dict, mentioned: Iterable[str]) -> str:
    """Caption = scene description, plus the glyphs the caption happens to mention."""
    phrases = [CATEGORY_PHRASES[c] for c in CATEGORIES if c in set(mentioned)]
    text = describe_scene(scene)
    if phrases:
        joined = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
        text += f", with {joined}"
    return text


# ---------------------------------------------------------------- the world

TRUTH_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("format", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("caption", pa.string()), ("scene", pa.string()),
    ("n_shapes", pa.int32()), ("people", pa.bool_()), ("violence", pa.bool_()), ("hate", pa.bool_()),
    ("mentioned", pa.list_(pa.string())), ("distractors", pa.list_(pa.string())),
])


@dataclass
class WorldInfo:
    """What `generate_world` made (or found already made) in `root`."""

    root: Path
    count: int
    config: dict
    categories: dict[str, int]
    formats: dict[str, int]
    seconds: float
    generated: bool = True  # False: an identical world was already there

    @property
    def truth_path(self) -> Path:
        return self.root / "truth.parquet"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"


def world_config(cfg) -> dict:
    """The part of a SampleWorldConfig that determines the world's content."""
    return {k: getattr(cfg, k) for k in WORLD_KEYS}


def assign_categories(seed: int, count: int, fractions: dict[str, float]) -> dict[str, set[int]]:
    """Exactly round(fraction * count) images per category, chosen independently per category."""
    return {cat: set(derive_rng(seed, "categories", cat).sample(range(count), round(fractions[cat] * count)))
            for cat in CATEGORIES}


def image_row(index: int, cfg: dict, categories: list[str]) -> tuple[dict, Image.Image]:
    """Scene, caption and image for one index: a pure function of (seed, index, config)."""
    rng = derive_rng(cfg["seed"], "image", index)
    near = []
    if rng.random() < cfg["distractor_fraction"]:
        kinds = [d for c in CATEGORIES for d in DISTRACTORS[c]]
        near = rng.sample(kinds, rng.choice((1, 1, 2)))
    scene = make_scene(rng, cfg["max_shapes"], categories, near, cfg["standin_scale"])
    mentioned = [c for c in categories if rng.random() < cfg["caption_mentions_fraction"]]
    absent = [c for c in CATEGORIES if c not in categories]
    if absent and rng.random() < cfg["false_mention_fraction"]:  # web captions are not always right
        mentioned.append(rng.choice(absent))
    fmt = "png" if rng.random() < cfg["png_fraction"] else "jpeg"
    image_id = f"{index:06d}"
    row = {
        "image_id": image_id,
        "path": f"images/{image_id}.{'png' if fmt == 'png' else 'jpg'}",
        "format": fmt, "width": cfg["image_size"], "height": cfg["image_size"],
        "caption": caption_for(scene, mentioned),
        "scene": json.dumps(scene, sort_keys=True, separators=(",", ":")),
        "n_shapes": len(scene["shapes"]),
        "people": "people" in categories, "violence": "violence" in categories, "hate": "hate" in categories,
        "mentioned": [c for c in CATEGORIES if c in mentioned],
        "distractors": [d["glyph"] for d in scene["distractors"]],
    }
    return row, render_scene(scene, cfg["image_size"])


def _read_world_json(root: Path) -> dict | None:
    try:
        return json.loads((root / "world.json").read_text())
    except (OSError, ValueError):
        return None


def _count_images(root: Path) -> int:
    images = root / "images"
    return sum(1 for p in images.iterdir() if _IMAGE_NAME.match(p.name)) if images.is_dir() else 0


def _prepare_dir(root: Path) -> None:
    """Refuse to spray images into a directory that holds something else; clear an old world."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / "world.json").exists() \
            and not (root / "images").is_dir():
        raise UserError(f"{root}: directory is not empty and holds no sample world; choose a new directory")
    (root / "world.json").unlink(missing_ok=True)
    images = root / "images"
    if images.is_dir():
        for p in images.iterdir():
            if _IMAGE_NAME.match(p.name):
                p.unlink()
    for name in ("truth.parquet", "urls.parquet", "index.html"):
        (root / name).unlink(missing_ok=True)
    images.mkdir(parents=True, exist_ok=True)


def _write_index_html(root: Path, rows: list[dict], limit: int = 200) -> None:
    cells = []
    for r in rows[:limit]:
        labels = " ".join(c for c in CATEGORIES if r[c])
        cells.append(f'<figure><img src="{r["path"]}" width="128" height="128" loading="lazy">'
                     f'<figcaption>{html.escape(r["caption"])}'
                     f'{f" <b>[{labels}]</b>" if labels else ""}</figcaption></figure>')
    (root / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>sample world</title>"
        "<style>body{font:13px sans-serif}figure{display:inline-block;width:150px;vertical-align:top;"
        "margin:6px}b{color:#b00}</style>\n"
        f"<h1>Sample world: first {min(limit, len(rows))} of {len(rows)} images</h1>\n"
        + "\n".join(cells) + "\n")


def generate_world(cfg, out_dir: str | os.PathLike, *, progress: bool = False) -> WorldInfo:
    """Render `cfg.count` images into `out_dir` with the truth table; skip if already there.

    `cfg` is a `pipeline.config.SampleWorldConfig`. Deterministic: same config,
    byte-identical files. Single process: 2000 images of 128 px take a few seconds.
    """
    t0 = time.perf_counter()
    root = Path(out_dir)
    wc = world_config(cfg)
    old = _read_world_json(root)
    if old and old.get("version") == WORLD_VERSION and old.get("config") == wc \
            and (root / "truth.parquet").is_file() and _count_images(root) == old.get("images"):
        return WorldInfo(root, old["images"], wc, old["categories"], old["formats"],
                         time.perf_counter() - t0, generated=False)
    _prepare_dir(root)
    fractions = {c: wc[f"{c}_fraction"] for c in CATEGORIES}
    chosen = assign_categories(wc["seed"], wc["count"], fractions)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=wc["count"], unit="img", desc="sample world", disable=None)
    rows = []
    for i in range(wc["count"]):
        row, img = image_row(i, wc, [c for c in CATEGORIES if i in chosen[c]])
        (root / row["path"]).write_bytes(encode(img, row["format"]))
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    table = pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA)
    with atomic_open(str(root / "truth.parquet")) as f:
        pq.write_table(table, f)
    _write_index_html(root, rows)
    categories = {c: len(chosen[c]) for c in CATEGORIES}
    formats = {f: sum(r["format"] == f for r in rows) for f in ("jpeg", "png")}
    meta = {"format": WORLD_FORMAT, "version": WORLD_VERSION, "config": wc, "images": len(rows),
            "categories": categories, "formats": formats}
    write_json_atomic(str(root / "world.json"), meta)  # last: marks a finished world
    return WorldInfo(root, len(rows), wc, categories, formats, time.perf_counter() - t0)


# ---------------------------------------------------------------- the URL list

@dataclass(frozen=True)
class BadRowKind:
    """One bad row of the URL list: where `SampleWorldServer` serves it and what ingest should record."""

    name: str
    path: str    # URL path on the server
    reason: str  # the reject reason an ingest stage should give it (ARCHITECTURE.md rejects schema)
    what: str


# Every URL list written with bad_rows=True holds exactly these rows, once each, in this order.
BAD_ROW_KINDS: tuple[BadRowKind, ...] = (
    BadRowKind("missing_image", "/images/missing-000000.jpg", "http_404", "an image name the world lacks"),
    BadRowKind("missing_route", "/gone/picture.png", "http_404", "a path the server does not know"),
    BadRowKind("not_image", "/bad/not-image.jpg", "not_image", "an HTML page served with 200 text/html"),
    BadRowKind("truncated", "/bad/truncated.jpg", "decode_error", "the first half of a JPEG"),
    BadRowKind("oversized", "/bad/oversized.png", "too_large",
               "a small PNG whose header says oversized_side x oversized_side pixels"),
    BadRowKind("slow", "/bad/slow.jpg", "timeout",
               "a good JPEG sent after slow_seconds (a timeout when the ingest timeout is shorter)"),
    BadRowKind("opt_out", "/bad/opt-out.jpg", "opt_out", "a good JPEG with X-Robots-Tag: noai, noimageai"),
)
REDIRECT_EVERY = 50  # image rows 0, 50, 100, ... are listed via /redirect/ (a 302 to /images/)
URLS_SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("image_id", pa.string())])


def read_world(world_dir: str | os.PathLike) -> dict:
    """world.json of a finished world; UserError if `world_dir` holds none."""
    meta = _read_world_json(Path(world_dir))
    if not meta or meta.get("format") != WORLD_FORMAT:
        raise UserError(f"{world_dir}: not a sample world (no valid world.json); run `glide sample-world -o DIR`")
    return meta


def bad_row_caption(seed: int, k: int) -> str:
    """A plausible caption for bad row `k`: a scene description like any other."""
    return describe_scene(make_scene(derive_rng(seed, "bad-row", k), 2))


def write_url_list(world_dir: str | os.PathLike, base_url: str, path: str | os.PathLike | None = None,
                   bad_rows: bool = True) -> Path:
    """Write the crawl input for a served world: columns url, caption, image_id (null on bad rows).

    One row per image (every REDIRECT_EVERY-th through /redirect/), plus, with
    `bad_rows`, one row per `BAD_ROW_KINDS` entry spread evenly through the list.
    Every (url, caption) pair is distinct. Default path: world_dir/urls.parquet.
    """
    root = Path(world_dir)
    meta = read_world(root)
    base = base_url.rstrip("/")
    good = []
    for i, r in enumerate(pq.read_table(root / "truth.parquet", columns=["image_id", "path", "caption"])
                          .to_pylist()):
        route = f"redirect/{Path(r['path']).name}" if i % REDIRECT_EVERY == 0 else r["path"]
        good.append({"url": f"{base}/{route}", "caption": r["caption"], "image_id": r["image_id"]})
    bad = [{"url": base + kind.path, "caption": bad_row_caption(meta["config"]["seed"], k), "image_id": None}
           for k, kind in enumerate(BAD_ROW_KINDS)] if bad_rows else []
    total = len(good) + len(bad)
    at = {math.floor((j + 1) * total / (len(bad) + 1) + 0.5) for j in range(len(bad))}  # distinct, spread
    good_it, bad_it = iter(good), iter(bad)
    rows = [next(bad_it) if pos in at else next(good_it) for pos in range(total)]
    out = Path(path) if path is not None else root / "urls.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(str(out)) as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=URLS_SCHEMA), f)
    return out
