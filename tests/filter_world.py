"""A small synthetic embeddings dataset for the filter tests: separable, but not trivially.

Each pair's embedding is a scene direction, plus for each category it shows a component along the
category's direction u_c of random strength, plus for near misses (look-alikes) a component along
0.6 u_c + 0.8 v_c, plus noise; L2-normalised and stored as float16, like the embed stage's output.
A weak positive and a near miss have similar projections on u_c: only a nonlinear boundary that
also looks at v_c separates them, and the noise makes some of them overlap.
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

import shards as sh

CATEGORIES = ("people", "violence", "hate")
MODEL = "test-clip-32"


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _image(scene: int, flags: dict, i: int) -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (48, 40), [(200, 220, 240), (230, 230, 200), (210, 240, 210), (240, 210, 220)][scene % 4])
    draw = ImageDraw.Draw(im)
    colours = {"people": (200, 40, 40), "violence": (40, 40, 40), "hate": (120, 40, 160)}
    for k, name in enumerate(CATEGORIES):
        if flags[name]:
            draw.rectangle([4 + 14 * k, 12, 14 + 14 * k, 30], fill=colours[name])
    draw.point((i % 48, (i // 48) % 40), fill=(0, 0, 0))  # every image its own bytes
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def make_world(n: int, dim: int = 32, seed: int = 0, positive: float = 0.25, near_miss: float = 0.25):
    """(embeddings (n, dim) float16, truth {category: (n,) bool}, scenes (n,) int)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((6 + 2 * len(CATEGORIES), dim))  # same in every world
    scenes_dirs, cat_dirs = _unit(basis[:6]), _unit(basis[6:])
    scenes = rng.integers(0, 6, n)
    x = scenes_dirs[scenes] * 1.0
    truth = {}
    for c, name in enumerate(CATEGORIES):
        u, v = cat_dirs[2 * c], cat_dirs[2 * c + 1]
        pos = rng.random(n) < positive
        near = ~pos & (rng.random(n) < near_miss)
        strength = rng.uniform(0.35, 1.2, n)
        x = x + (pos * strength)[:, None] * u + (near * rng.uniform(0.4, 0.9, n))[:, None] * _unit(0.6 * u + 0.8 * v)
        truth[name] = pos
    x = x + rng.normal(0, 0.09, (n, dim))
    return _unit(x).astype(np.float16), truth, scenes


def write_embeddings_dataset(folder, n: int, *, dim: int = 32, seed: int = 0, shards: int = 2,
                             images: bool = True, model: str = MODEL):
    """A finished embeddings dataset (shards + manifest, stage "embed"); returns (path, uids, truth)."""
    emb, truth, scenes = make_world(n, dim, seed)
    folder = str(folder)
    schema = sh.extend_schema(sh.PAIRS_SCHEMA, sh.clip_embedding_field(dim))
    urls = [f"http://127.0.0.1/img/{seed}/{i}.png" for i in range(n)]
    captions = [f"a scene {scenes[i]} <b>#{i}</b> & more" for i in range(n)]
    uids = [sh.compute_uid(u, c) for u, c in zip(urls, captions)]
    image_bytes = [_image(int(scenes[i]), {k: bool(truth[k][i]) for k in CATEGORIES}, i) if images else b""
                   for i in range(n)]
    entries = []
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        rows = range(bounds[s], bounds[s + 1])
        table = pa.table({
            "uid": [uids[i] for i in rows], "url": [urls[i] for i in rows], "caption": [captions[i] for i in rows],
            "image": pa.array([image_bytes[i] for i in rows], pa.binary()),
            "image_format": ["png"] * len(rows), "width": pa.array([48] * len(rows), pa.int32()),
            "height": pa.array([40] * len(rows), pa.int32()),
            "original_width": pa.array([48] * len(rows), pa.int32()),
            "original_height": pa.array([40] * len(rows), pa.int32()),
            "sha256": [sh.bytes_sha256(image_bytes[i]) for i in rows],
            "source": [f"urls.parquet:{i}" for i in rows],
            "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb[bounds[s]:bounds[s + 1]].ravel(),
                                                                         pa.float16()), dim),
        }, schema=schema)
        name = sh.shard_name(s)
        info = sh.write_table(sh.join(folder, sh.SHARDS_DIR, name), table)
        rejects = sh.write_table(sh.join(folder, sh.REJECTS_DIR, name), sh.REJECTS_SCHEMA.empty_table())
        entries.append(({"name": name, **info}, {"name": name, **rejects}))
    sh.write_manifest(folder, stage="embed", config={"clip": model}, counts={"input": n, "kept": n, "rejected": {}},
                      shards=[e[0] for e in entries], rejects=[e[1] for e in entries])
    return folder, uids, truth


def write_labels_csv(path, uids, truth, *, count: int, seed: int = 0, categories=CATEGORIES) -> str:
    """Labels of `count` random pairs per category (as a person would give them): uid,filter,label."""
    rng = np.random.default_rng(seed)
    lines = ["uid,filter,label"]
    for name in categories:
        for i in rng.choice(len(uids), size=count, replace=False):
            lines.append(f"{uids[i]},{name},{'true' if truth[name][i] else 'false'}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)
