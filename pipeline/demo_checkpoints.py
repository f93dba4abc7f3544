"""`make demo-checkpoints`: retrain the demo's shipped checkpoints from scratch and pack them.

    python -m pipeline.demo_checkpoints                 # WORK = runs/demo-checkpoints (must not exist)
    python -m pipeline.demo_checkpoints --pack-only     # re-pack WORK's finished runs

Runs the demo's own steps as `make demo FROM_SCRATCH=1` does (sample world -> `glide ingest` ->
`glide train base` -> `glide train upsampler`, configs/train-demo.yaml) under WORK, then writes
checkpoints/demo/{base,upsampler}/: only what sampling needs, the EMA weights of the last export
(float16 by default: half the bytes, and the loader copies them into the model's float32
parameters) as a regular checkpoint folder (model.safetensors + config.json with its sha256), plus
provenance.json: the commands, the git commit, the dataset's manifest digest, date, wall times and
images/s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.demo import KINDS, PROVENANCE_FILE, REPO, SHIPPED, TRAIN_CONFIG, WORLD_CONFIG, crawl_world, train_models
from shards import manifest_digest

REGENERATE = "make demo-checkpoints"
DEFAULT_WORK = REPO / "runs" / "demo-checkpoints"
RECORD_FILE = "steps.json"  # WORK/steps.json: what ran, so --pack-only can re-pack with the same provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo_checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="world, dataset and training runs (default %(default)s)")
    parser.add_argument("-o", "--out", default=str(SHIPPED), help="where the packed checkpoints go (default %(default)s)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored weight dtype")
    parser.add_argument("--max-steps", type=int, default=None, help="override the training length (quick checks)")
    parser.add_argument("--pack-only", action="store_true", help="re-pack the finished runs already in WORK")
    args = parser.parse_args(argv)

    work = Path(args.work).resolve()
    if args.pack_only:
        record = json.loads((work / RECORD_FILE).read_text())
    else:
        if work.exists():
            raise SystemExit(f"{work}: exists; remove it to retrain from scratch, or pass --pack-only")
        record = produce(work, args.max_steps)
    for kind in KINDS:
        dest = pack(work / "runs" / kind, Path(args.out) / kind, kind, record, args.dtype)
        print(f"packed {kind}: {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB)")
    return 0


def produce(work: Path, max_steps: int | None) -> dict:
    """The demo's steps from scratch under WORK; returns (and writes WORK/steps.json) what ran."""
    t0 = time.perf_counter()
    git = git_state()  # before training: the code that runs
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    dataset, ingest = crawl_world(WORLD_CONFIG, work)
    trained = train_models(dataset, TRAIN_CONFIG, work / "runs", max_steps)
    dataset_ref = {"path": rel(dataset), "manifest_sha256": manifest_digest(str(dataset))}
    record = {"date": date, "git": git, "world_config": rel(WORLD_CONFIG), "dataset": dataset_ref,
              "ingest": asdict(ingest), "train": {kind: asdict(step) for kind, step in trained.items()},
              "total_wall_s": round(time.perf_counter() - t0, 1), "host": host()}
    (work / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def pack(run: Path, dest: Path, kind: str, record: dict, dtype: str) -> Path:
    """RUN's latest export -> DEST: its EMA weights alone, as DTYPE, plus provenance.json."""
    import torch

    from training.checkpoint import (EMA_FILE, TOKENIZER_DIR, load_state_dict, model_config_of,
                                     resolve_checkpoint_dir, save_checkpoint)

    export = resolve_checkpoint_dir(run)
    state, meta, name = load_state_dict(export, use_ema=True)  # sha256-verified
    if name != EMA_FILE:
        raise SystemExit(f"{export}: has no {EMA_FILE}; the demo ships EMA weights")
    cast = getattr(torch, dtype)
    state = {k: v.to(cast) if v.is_floating_point() else v for k, v in state.items()}
    tokenizer_files = {f.split("/", 1)[1]: export / f for f in meta["files"] if f.startswith(TOKENIZER_DIR + "/")}
    weights = f"EMA weights of step {meta['step']}, stored as {dtype}"
    save_checkpoint(dest, state, model_config_of(export, meta), step=meta["step"], tokenizer_files=tokenizer_files,
                    extra={**meta.get("extra", {}), "weights": weights, "provenance": PROVENANCE_FILE})
    train = record["train"][kind]
    provenance = {
        "what": f"the demo's {kind} (`make demo` samples it)",
        "weights": weights,
        "regenerate": REGENERATE,
        "commands": [record["ingest"]["command"], train["command"]],
        "world": f"pipeline.demo.crawl_world: sample world of {record['world_config']}, served on 127.0.0.1",
        "ingest": record["ingest"],
        "train": {**train, "steps": meta["step"], **throughput(run)},
        "dataset": record["dataset"],
        "source_export": rel(export),
        "git": record["git"],
        "date": record["date"],
        "host": record["host"],
    }
    (dest / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return dest


def throughput(run: Path) -> dict:
    """images/s of RUN/metrics.jsonl's log windows (median; the first window holds the warm-up)."""
    rates = [r["images_per_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "images_per_s" in r]
    steady = rates[1:] or rates
    return {"images_per_s": round(statistics.median(steady), 1),
            "images_per_s_range": [round(min(steady), 1), round(max(steady), 1)]}


def git_state() -> dict:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=True).stdout

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_changes": bool(changed), "changed_files": changed}


def host() -> dict:
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": version("torch"), "deepspeed": version("deepspeed"), "ray": version("ray"),
            "note": "cores shared with other jobs; throughput varies several-fold between days"}


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    sys.exit(main())
