"""`make demo`: the main job end to end on the embedded defaults.

Generates the sample world, serves it on 127.0.0.1, crawls it with `glide ingest` into Arrow shards,
and samples the demo's shipped base and upsampler (checkpoints/demo/) with `glide sample`; with
--from-scratch (`make demo FROM_SCRATCH=1`) it first trains both with `glide train` on the crawl.
Every stage runs as the real `glide` command a user would type (printed before it runs).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.caption_accuracy import score
from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent
WORLD_CONFIG = REPO / "configs" / "sample-world.yaml"
TRAIN_CONFIG = REPO / "configs" / "train-demo.yaml"
SHIPPED = REPO / "checkpoints" / "demo"  # made by `make demo-checkpoints` (pipeline/demo_checkpoints.py)
KINDS = ("base", "upsampler")
PROVENANCE_FILE = "provenance.json"
DEMO_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a purple background",
    "a green triangle on a white background",
    "a blue star on an orange background",
]


@dataclass
class Step:
    """One `glide` command the demo ran, as a user would type it, and how long it took."""
    command: str
    wall_s: float


def glide(*argv) -> Step:
    argv = [in_repo(a) for a in argv]
    line = f"glide {shlex.join(argv)}"
    print(f"\n$ {line}", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"demo: `glide {argv[0]}` failed with exit code {result.returncode}")
    return Step(line, round(time.perf_counter() - t0, 1))


def in_repo(arg) -> str:
    """An argument as a user in the checkout types it: paths under the repository relative to it."""
    path = Path(str(arg))
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(arg)


def crawl_world(config: str | Path, out: Path) -> tuple[Path, Step]:
    """Steps 1-2: generate and serve the sample world, crawl it with `glide ingest` into OUT/dataset."""
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    cfg = load_config(config)
    world_dir, dataset = out / "world", out / "dataset"
    print(f"== 1. sample world -> {world_dir}", flush=True)
    info = generate_world(cfg.sample_world, world_dir)
    print(f"   {info.count} images, {cfg.sample_world.image_size}px, seed {cfg.sample_world.seed}")
    with SampleWorldServer(world_dir, host=cfg.sample_world.host, port=cfg.sample_world.port,
                           slow_seconds=cfg.sample_world.slow_seconds) as server:
        urls = write_url_list(world_dir, server.base_url)
        print(f"   serving on {server.base_url}; URL list {urls}")
        print(f"== 2. ingest: crawl the URL list into Arrow shards -> {dataset}", flush=True)
        step = glide("ingest", urls, "-o", dataset, "--config", config)
    return dataset, step


def train_models(dataset: Path, train_config: str | Path, runs: Path, max_steps: int | None = None) -> dict[str, Step]:
    """Steps 3-4: `glide train base` and `glide train upsampler` into RUNS/base and RUNS/upsampler."""
    steps = ["--max-steps", str(max_steps)] if max_steps else []
    done = {}
    for n, kind in enumerate(KINDS, start=3):
        print(f"\n== {n}. train the {kind} -> {runs / kind}", flush=True)
        done[kind] = glide("train", kind, "--data", dataset, "--config", train_config, "-o", runs / kind, *steps)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=str(REPO / "demo-output"), help="where everything is written")
    parser.add_argument("--config", default=str(WORLD_CONFIG), help="pipeline config of the world and ingest")
    parser.add_argument("--from-scratch", action="store_true",
                        help=f"train the base and upsampler on the crawl instead of sampling {SHIPPED.relative_to(REPO)}/")
    parser.add_argument("--train-config", default=str(TRAIN_CONFIG), help="pipeline config of the training")
    parser.add_argument("--max-steps", type=int, default=None, help="override the training length (with --from-scratch)")
    parser.add_argument("--skip-sample", action="store_true", help="stop after ingest (and training)")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    t0 = time.time()
    dataset, _ = crawl_world(args.config, out)
    if args.from_scratch:
        train_models(dataset, args.train_config, out / "runs", args.max_steps)
        models = {kind: out / "runs" / kind for kind in KINDS}
    else:
        models = {kind: SHIPPED / kind for kind in KINDS}
        print(f"\n== 3-4. training skipped: sampling the shipped checkpoints (retrain: make demo FROM_SCRATCH=1)")
        describe_shipped(models)
    if not args.skip_sample:
        sample_and_score(models, out)
    print(f"\n== demo finished in {time.time() - t0:.0f} s; everything is under {out}")
    print(f"   dataset:      {dataset}  (manifest.json, shards/, rejects/)")
    print(f"   checkpoints:  {models['base']}  {models['upsampler']}")
    if args.from_scratch:
        print(f"   training curves: tensorboard --logdir {out / 'runs'}")
    return 0


def describe_shipped(models: dict[str, Path]) -> None:
    """Where the shipped checkpoints are and how they were made (their provenance.json)."""
    for kind, path in models.items():
        prov_file = path / PROVENANCE_FILE
        if not prov_file.is_file():
            raise SystemExit(f"demo: {prov_file} is missing; run `make demo FROM_SCRATCH=1` or "
                             f"`make demo-checkpoints` to train the checkpoints")
        prov = json.loads(prov_file.read_text())
        train = prov["train"]
        print(f"   {kind}: {path}  ({prov['weights']})")
        print(f"      made {prov['date']} on commit {prov['git']['commit'][:12]}"
              f"{' with uncommitted changes' if prov['git']['uncommitted_changes'] else ''}"
              f" by `{prov['regenerate']}`:")
        print(f"      $ {train['command']}")
        print(f"      {train['steps']} steps in {train['wall_s'] / 60:.1f} min, {train['images_per_s']:.0f} img/s"
              f" on {prov['host']['cpus']} CPU cores; dataset manifest sha256 {prov['dataset']['manifest_sha256'][:12]}")


def sample_and_score(models: dict[str, Path], out: Path) -> None:
    """Step 5: four captions with classifier-free guidance, upsampled and at the base's 16px."""
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(DEMO_PROMPTS) + "\n")
    samples, base_samples = out / "samples", out / "samples-base"
    print(f"\n== 5. sample with classifier-free guidance, then upsample -> {samples}", flush=True)
    sample_args = ["--prompts", prompts, "--per-prompt", "4", "--guidance", "3", "--steps", "100", "--seed", "0"]
    glide("sample", "--model", models["base"], "--upsampler", models["upsampler"], *sample_args, "-o", samples)
    # the same seed draws the same base images: the 16px samples the upsampler started from
    glide("sample", "--model", models["base"], *sample_args, "--no-progress", "-o", base_samples)
    print(f"\n   sample grid: {samples / 'grid.png'}  (prompts: {prompts}; 16px base: {base_samples / 'grid.png'})")
    for name, folder in (("16px base", base_samples), ("64px upsampled", samples)):
        s = score(folder)
        print(f"   captioned colours ({name}): background {s['background_right']}/{s['images']}, "
              f"shape {s['foreground_right']}/{s['images']}  (python -m pipeline.caption_accuracy {folder})")


if __name__ == "__main__":
    sys.exit(main())
