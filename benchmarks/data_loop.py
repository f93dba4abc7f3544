"""Training throughput with Ray Data's scheduling loop paced (train.data_loop_period) and unpaced.

    python -m benchmarks.data_loop [--pairs 4000] [--steps 60] [--reps 2] [--period 0.05]

Writes a dataset of --pairs sample-world images at 64 px (Arrow shards, as `glide ingest` stores
them), then runs the same `glide train clip --clip-mode clean` (the demo's CLIP, configs/
train-clip-demo.yaml with --steps steps and no exports) with data_loop_period 0 and --period,
alternating which goes first, each in its own process as a user runs it: one Ray Train worker
with 2 CPUs, fed by the Ray Data stream whose executor runs in Ray Train's SplitCoordinator actor.
Images/s is the median of the steps logged after the first third (start-up left out), then the
median over repetitions. ratio = paced / unpaced (goal >= 1: pacing gives the trainer the core the
backpressured loop spun on, never slows it).
Ends with one JSON line {"benchmark": "data_loop", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def write_dataset(root: Path, pairs: int) -> Path:
    """DATASET/{shards, manifest.json} of sample-world pairs (the world's image bytes, 64 px), 500 rows a shard."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    import shards as sh
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world

    world = root / "world"
    generate_world(SampleWorldConfig(count=pairs, seed=5, image_size=64, bad_rows=False), world)
    truth = pq.read_table(world / "truth.parquet").to_pylist()
    dataset = root / "dataset"
    records = []
    for start in range(0, pairs, 500):
        rows = []
        for i, t in enumerate(truth[start:start + 500], start):
            data, url = (world / t["path"]).read_bytes(), f"http://127.0.0.1/{i:06d}.png"
            rows.append({"uid": sh.compute_uid(url, t["caption"]), "url": url, "caption": t["caption"],
                         "image": data, "image_format": t["format"], "width": 64, "height": 64, "original_width": 64,
                         "original_height": 64, "sha256": hashlib.sha256(data).hexdigest(), "source": f"bench:{i}"})
        name = sh.shard_name(len(records))
        rec = sh.write_table(str(dataset / sh.SHARDS_DIR / name), pa.Table.from_pylist(rows, schema=sh.PAIRS_SCHEMA))
        records.append({"name": name, **rec})
    sh.write_manifest(str(dataset), stage="benchmark", config={}, shards=records,
                      counts={"input": pairs, "kept": pairs, "rejected": {}})
    return dataset


def train_rate(dataset: Path, out: Path, steps: int, period: float) -> float:
    """Median images/s of one `glide train clip` run after its first third of logged steps."""
    config = yaml.safe_load((REPO / "configs" / "train-clip-demo.yaml").read_text())
    config["train"].update(max_steps=steps, save_every=10 * steps, log_every=10, warmup_steps=10,
                           data_loop_period=period)
    cfg_file = out.with_suffix(".yaml")
    cfg_file.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "clip", "--clip-mode", "clean",
                           "--data", str(dataset), "--config", str(cfg_file), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"glide train exited {done.returncode}: {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if r["step"] > steps / 3]
    return statistics.median(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=4000, help="images in the dataset")
    p.add_argument("--steps", type=int, default=60, help="training steps per run (batch 128)")
    p.add_argument("--reps", type=int, default=2, help="runs per side (alternating)")
    p.add_argument("--period", type=float, default=0.05, help="the paced side's data_loop_period (s)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-data-loop-") as tmp:
        tmp = Path(tmp)
        dataset = write_dataset(tmp, args.pairs)
        rates = {"paced": [], "unpaced": []}
        for rep in range(args.reps):
            order = ["paced", "unpaced"] if rep % 2 == 0 else ["unpaced", "paced"]
            for side in order:
                period = args.period if side == "paced" else 0.0
                rate = train_rate(dataset, tmp / f"{side}-{rep}", args.steps, period)
                rates[side].append(rate)
                print(f"rep {rep + 1}/{args.reps} {side:8s} (data_loop_period {period:g} s): {rate:.1f} img/s",
                      flush=True)
    paced, unpaced = statistics.median(rates["paced"]), statistics.median(rates["unpaced"])
    ratio = paced / unpaced
    print(f"paced {paced:.1f} img/s vs unpaced {unpaced:.1f} img/s: ratio {ratio:.2f} (goal >= 1)")
    print(json.dumps({"benchmark": "data_loop", "ratio": round(ratio, 3), "paced_images_per_s": round(paced, 1),
                      "unpaced_images_per_s": round(unpaced, 1), "period_s": args.period, "steps": args.steps,
                      "reps": args.reps, "rates": rates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
