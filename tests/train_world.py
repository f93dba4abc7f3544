"""Helpers for the trainer tests: sample-world shards and tiny model configs (no tests here).

The shards are written straight from the sample world's images with the `shards` package (the ingest
stage writes the same schema after crawling them over HTTP).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa


def write_world_shards(root: Path, *, count: int = 64, rows_per_shard: int = 16, image_size: int = 64,
                       max_shapes: int = 1, seed: int = 0, repeat_first: bool = False) -> Path:
    """A dataset folder DATASET/{shards/part-*.arrow, manifest.json} of sample-world pairs.

    repeat_first: every row is the first image and caption (under distinct uids): a data set whose
    batches are all alike, whatever order the Ray Data split hands rows to the workers in.
    """
    import shards
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world
    import pyarrow.parquet as pq

    world = root / "world"
    cfg = SampleWorldConfig(count=count, seed=seed, image_size=image_size, max_shapes=max_shapes,
                            people_fraction=0.0, violence_fraction=0.0, hate_fraction=0.0, bad_rows=False,
                            distractor_fraction=0.0, false_mention_fraction=0.0)  # shapes only: the trainers' world
    generate_world(cfg, world)
    truth = pq.read_table(world / "truth.parquet").to_pylist()
    dataset = root / "dataset"
    records = []
    for start in range(0, count, rows_per_shard):
        rows = []
        for i in range(start, min(count, start + rows_per_shard)):
            src = truth[0] if repeat_first else truth[i]
            data = (world / src["path"]).read_bytes()
            url = f"http://127.0.0.1/{i:06d}"
            rows.append({"uid": shards.compute_uid(url, src["caption"]), "url": url, "caption": src["caption"],
                         "image": data, "image_format": src["format"], "width": image_size,
                         "height": image_size, "original_width": image_size, "original_height": image_size,
                         "sha256": hashlib.sha256(data).hexdigest(), "source": f"truth.parquet:{i}"})
        table = pa.Table.from_pylist(rows, schema=shards.PAIRS_SCHEMA)
        name = shards.shard_name(len(records))
        rec = shards.write_table(str(dataset / shards.SHARDS_DIR / name), table)
        records.append({"name": name, **rec})
    shards.write_manifest(str(dataset), stage="test", config={}, shards=records,
                          counts={"input": count, "kept": count, "rejected": {}})
    return dataset


def write_model_config(path: Path, base: str = "tiny", **changes) -> Path:
    """A model config JSON: the shipped config `base` (training/model_configs/) with `changes` applied."""
    from training.model_config import NAMED_CONFIGS

    data = json.loads((NAMED_CONFIGS / f"{base}.json").read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def micro_config(path: Path, kind: str = "base") -> Path:
    """tiny.json at 16px (two UNet levels, attention at 8px): fast enough for many test steps.

    kind "upsampler": a 16px upsampler from 8px with the linear schedule, as GLIDE's upsampler.
    """
    changes = dict(image_size=16, channel_mult="1,2", attention_resolutions="8")
    if kind == "upsampler":
        changes.update(kind="upsampler", noise_schedule="linear", extra={"low_res_size": 8})
    return write_model_config(path, **changes)
