"""A tiny pipeline for `glide run` tests: a served sample world, its URL list, labels answered from
its ground truth, a small clean CLIP with random weights (saved here, nothing downloaded), and the
pipeline config that runs ingest -> embed -> fit-filters -> filter on it."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow.parquet as pq
import yaml

import shards as sh

COUNT = 48
STAGE_SECTIONS = {
    "ray": {"num_cpus": 2},
    "ingest": {"image_size": 16, "allow_private_networks": True, "timeout": 4, "threads": 4, "shard_size": 16},
    "embed": {"batch_size": 8},
    # one grid point, a loose target: the random CLIP's features separate little
    "fit_filters": {"c_values": [10.0], "gamma_scales": [2.0], "cv_folds": 2, "held_out": 40, "target_fnr": 0.3},
}


def save_clean_clip(folder: Path) -> Path:
    import torch

    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import load_model_config

    cfg = load_model_config("tiny-clip")
    torch.manual_seed(0)
    save_checkpoint(folder, create_model(cfg, device="cpu"), cfg, step=1, extra={"train": {"clip_mode": "clean"}})
    return folder


def write_labels(urls: Path, truth: Path, out: Path) -> Path:
    """people labels of every good row, as a person would give them (uid,filter,label)."""
    flags = {r["image_id"]: r["people"] for r in pq.read_table(truth).to_pylist()}
    lines = ["uid,filter,label"]
    for r in pq.read_table(urls).to_pylist():
        if r["image_id"] is not None:
            lines.append(f"{sh.compute_uid(r['url'], r['caption'])},people,{str(flags[r['image_id']]).lower()}")
    out.write_text("\n".join(lines) + "\n")
    return out


@contextlib.contextmanager
def served_world(root: Path):
    """Generate the world under ROOT, serve it, and yield ROOT with urls.parquet, labels.csv and clip/."""
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    generate_world(SampleWorldConfig(count=COUNT, seed=3, image_size=32, max_shapes=1, people_fraction=0.4),
                   root / "world")
    save_clean_clip(root / "clip")
    with SampleWorldServer(root / "world", slow_seconds=1.0) as server:
        urls = write_url_list(root / "world", server.base_url, path=root / "urls.parquet")
        write_labels(urls, root / "world" / "truth.parquet", root / "labels.csv")
        yield root


def write_pipeline(path: Path, run: dict, **sections) -> Path:
    """A pipeline config: the tiny stage sections (each key of `sections` replaces or adds keys of one)
    and the given `run` section."""
    config = {name: dict(values) for name, values in STAGE_SECTIONS.items()}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    config["run"] = run
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def uids(dataset: str, kind: str = sh.SHARDS_DIR) -> list[str]:
    return [u for b in sh.iter_record_batches(dataset, ["uid"], kind=kind) for u in b.column(0).to_pylist()]
