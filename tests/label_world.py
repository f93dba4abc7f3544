"""Embeddings datasets with vectors the labels tests choose (shards, several record batches each, manifest)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

import shards as sh

MODEL = "test-clip-8"


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def uid_of(i: int) -> str:
    return sh.compute_uid(f"http://127.0.0.1/img/{i}.png", f"picture {i}")


def write_vectors_dataset(folder, vectors: np.ndarray, *, uids=None, shards: int = 2, batch_rows: int = 7,
                          config: dict | None = None, captions=None, images=None) -> tuple[str, list[str]]:
    """A finished embeddings dataset holding `vectors` (float16) in `shards` shards of `batch_rows`-row
    record batches; returns (path, uids). `config` is what the embed manifest records (default: the model).
    `captions` and `images` (PNG bytes) replace "picture i" and empty images; uids follow the captions."""
    folder = str(folder)
    n, dim = vectors.shape
    captions = list(captions) if captions is not None else [f"picture {i}" for i in range(n)]
    images = list(images) if images is not None else [b""] * n
    uids = list(uids) if uids is not None else [sh.compute_uid(f"http://127.0.0.1/img/{i}.png", captions[i])
                                                 for i in range(n)]
    schema = sh.extend_schema(sh.PAIRS_SCHEMA, sh.clip_embedding_field(dim))
    bounds = np.linspace(0, n, shards + 1).astype(int)
    entries = []
    for s in range(shards):
        rows = list(range(bounds[s], bounds[s + 1]))
        table = pa.table({
            "uid": [uids[i] for i in rows], "url": [f"http://127.0.0.1/img/{i}.png" for i in rows],
            "caption": [captions[i] for i in rows], "image": pa.array([images[i] for i in rows], pa.binary()),
            "image_format": ["png"] * len(rows), "width": pa.array([8] * len(rows), pa.int32()),
            "height": pa.array([8] * len(rows), pa.int32()), "original_width": pa.array([8] * len(rows), pa.int32()),
            "original_height": pa.array([8] * len(rows), pa.int32()), "sha256": [""] * len(rows),
            "source": [f"urls.parquet:{i}" for i in rows],
            "clip_embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors[rows].astype(np.float16).ravel(), pa.float16()), dim),
        }, schema=schema)
        table = pa.Table.from_batches(table.to_batches(max_chunksize=batch_rows), schema=schema)
        name = sh.shard_name(s)
        info = sh.write_table(sh.join(folder, sh.SHARDS_DIR, name), table)
        rejects = sh.write_table(sh.join(folder, sh.REJECTS_DIR, name), sh.REJECTS_SCHEMA.empty_table())
        entries.append(({"name": name, **info}, {"name": name, **rejects}))
    sh.write_manifest(folder, stage="embed", config=config or {"clip": MODEL},
                      counts={"input": n, "kept": n, "rejected": {}},
                      shards=[e[0] for e in entries], rejects=[e[1] for e in entries])
    return folder, uids
