"""`make demo-checkpoints`: retrain the demo's shipped checkpoints from scratch and pack them.

    python -m pipeline.demo_checkpoints                     # WORK = runs/demo-checkpoints (must not exist)
    python -m pipeline.demo_checkpoints --kinds clip        # only the clean CLIP
    python -m pipeline.demo_checkpoints --pack-only         # re-pack WORK's finished runs

Runs the demo's own steps as `make demo FROM_SCRATCH=1` does under WORK: sample world -> `glide
ingest` -> `glide train clip --clip-mode clean` (configs/train-clip-demo.yaml) on the crawl; for
the base and upsampler also `glide embed` -> labels -> `glide fit-filters` -> `glide filter`
(pipeline.demo_filters) and `glide train base|upsampler` (configs/train-demo.yaml) on the filtered
shards (with the shipped CLIP when the CLIP is not among --kinds). Then it writes
checkpoints/demo/KIND/ for each kind trained: only what the demo needs, the EMA weights of the last
export (float16 by default: half the bytes, and the loader copies them into the model's float32
parameters) as a regular checkpoint folder (model.safetensors + config.json with its sha256), plus
provenance.json: the commands, the git commit, the training dataset's manifest digest, date, wall
times and images/s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pipeline.demo import CLIP_WORLD_CONFIG, crawl_world, train_clip
from pipeline.demo_filters import DEMO_PLAN, label_fit_filter
from pipeline.demo_steps import REPO, SHIPPED, WORLD_CONFIG, Step, glide, in_repo
from pipeline.demo_summary import PROVENANCE_FILE
from pipeline.provenance import git_state
from shards import manifest_digest

TRAIN_CONFIG = REPO / "configs" / "train-demo.yaml"
KINDS = ("base", "upsampler")
ALL_KINDS = ("clip", *KINDS)
WHAT = {"clip": "the demo's clean CLIP (`make demo` embeds the crawl with it)",
        "base": "the demo's base (`make demo` fine-tunes it briefly on the filtered shards, then samples it)",
        "upsampler": "the demo's upsampler (`make demo` samples it)"}

DEFAULT_WORK = REPO / "runs" / "demo-checkpoints"
RECORD_FILE = "steps.json"  # WORK/steps.json: what ran, so --pack-only can re-pack with the same provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo_checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="world, dataset and training runs (default %(default)s)")
    parser.add_argument("-o", "--out", default=str(SHIPPED), help="where the packed checkpoints go (default %(default)s)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored weight dtype")
    parser.add_argument("--max-steps", type=int, default=None, help="override the training length (quick checks)")
    parser.add_argument("--pack-only", action="store_true", help="re-pack the finished runs already in WORK")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS),
                        help="comma-separated checkpoints to retrain (default %(default)s)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(ALL_KINDS):
        parser.error(f"--kinds: choose from {', '.join(ALL_KINDS)}")

    work = Path(args.work).resolve()
    if args.pack_only:
        record = json.loads((work / RECORD_FILE).read_text())
    else:
        if work.exists():
            raise SystemExit(f"{work}: exists; remove it to retrain from scratch, or pass --pack-only")
        record = produce(work, kinds, args.max_steps)
    for kind in record["kinds"]:
        dest = pack(work / "runs" / kind, Path(args.out) / kind, kind, record, args.dtype)
        print(f"packed {kind}: {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB)")
    return 0


def produce(work: Path, kinds: list[str], max_steps: int | None) -> dict:
    """The demo's steps from scratch under WORK; returns (and writes WORK/steps.json) what ran, per
    kind: its world config, ingest step, training step, dataset and every command that led to it."""
    t0 = time.perf_counter()
    record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "git": git_state(),  # before training: the code that runs
              "kinds": {}, "host": host()}
    clip = SHIPPED / "clip"
    if "clip" in kinds:
        clip = work / "runs" / "clip"
        ingest, step, dataset = train_clip(work, clip, max_steps)
        record["kinds"]["clip"] = {"world_config": rel(CLIP_WORLD_CONFIG), "ingest": asdict(ingest),
                                   "train": asdict(step), "dataset": dataset_ref(dataset),
                                   "commands": [ingest.command, step.command]}
    models = [k for k in KINDS if k in kinds]
    if models:
        dataset, ingest = crawl_world(WORLD_CONFIG, work)
        embed = glide("embed", dataset, "-o", work / "dataset-emb", "--clip", clip)
        filters = label_fit_filter(work / "dataset-emb", work / "world", work, DEMO_PLAN)
        before = [*record["kinds"].get("clip", {}).get("commands", []), ingest.command, embed.command,
                  *(s.command for s in filters.steps.values())]
        for kind, step in train_models(filters.filtered, work / "runs", max_steps, models).items():
            record["kinds"][kind] = {"world_config": rel(WORLD_CONFIG), "ingest": asdict(ingest),
                                     "train": asdict(step), "dataset": dataset_ref(filters.filtered),
                                     "commands": [*before, step.command], "filters": filters.figures}
    record["total_wall_s"] = round(time.perf_counter() - t0, 1)
    (work / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def train_models(dataset: Path, runs: Path, max_steps: int | None, kinds: list[str]) -> dict[str, Step]:
    """`glide train KIND` (configs/train-demo.yaml) on DATASET into RUNS/KIND for each of KINDS."""
    steps = ["--max-steps", str(max_steps)] if max_steps else []
    done = {}
    for kind in kinds:
        print(f"\n== train the {kind} on {in_repo(dataset)} -> {runs / kind}", flush=True)
        done[kind] = glide("train", kind, "--data", dataset, "--config", TRAIN_CONFIG, "-o", runs / kind, *steps)
    return done


def dataset_ref(dataset: Path) -> dict:
    return {"path": rel(dataset), "manifest_sha256": manifest_digest(str(dataset))}


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
    made = record["kinds"][kind]
    provenance = {
        "what": WHAT[kind],
        "weights": weights,
        "regenerate": f"python -m pipeline.demo_checkpoints --kinds {kind}",
        "commands": made["commands"],
        "world": f"pipeline.demo.crawl_world: sample world of {made['world_config']}, served on 127.0.0.1",
        "ingest": made["ingest"],
        "train": {**made["train"], "steps": meta["step"], **throughput(run)},
        "dataset": made["dataset"],
        **({"filters": made["filters"]} if "filters" in made else {}),
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
