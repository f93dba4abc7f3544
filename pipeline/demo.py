"""`make demo`: the main job end to end on the embedded defaults.

Generates the sample world, serves it on 127.0.0.1, crawls it with `glide ingest` into Arrow shards,
trains a tiny base and upsampler with `glide train`, and samples them with `glide sample`.
Every stage runs as the real `glide` command a user would type (printed before it runs).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pipeline.caption_accuracy import score
from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent
WORLD_CONFIG = REPO / "configs" / "sample-world.yaml"
TRAIN_CONFIG = REPO / "configs" / "train-demo.yaml"
DEMO_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a purple background",
    "a green triangle on a white background",
    "a blue star on an orange background",
]


def glide(*argv: str) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *map(str, argv)]
    print(f"\n$ glide {shlex.join(map(str, argv))}", flush=True)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"demo: `glide {argv[0]}` failed with exit code {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=str(REPO / "demo-output"), help="where everything is written")
    parser.add_argument("--config", default=str(WORLD_CONFIG), help="pipeline config of the world and ingest")
    parser.add_argument("--train-config", default=str(TRAIN_CONFIG), help="pipeline config of the training")
    parser.add_argument("--max-steps", type=int, default=None, help="override the training length")
    parser.add_argument("--skip-train", action="store_true", help="stop after ingest")
    args = parser.parse_args(argv)

    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    out = Path(args.out)
    cfg = load_config(args.config)
    t0 = time.time()
    world_dir = out / "world"
    dataset = out / "dataset"
    print(f"== 1. sample world -> {world_dir}", flush=True)
    info = generate_world(cfg.sample_world, world_dir)
    print(f"   {info.count} images, {cfg.sample_world.image_size}px, seed {cfg.sample_world.seed}")
    with SampleWorldServer(world_dir, host=cfg.sample_world.host, port=cfg.sample_world.port,
                           slow_seconds=cfg.sample_world.slow_seconds) as server:
        urls = write_url_list(world_dir, server.base_url)
        print(f"   serving on {server.base_url}; URL list {urls}")
        print(f"== 2. ingest: crawl the URL list into Arrow shards -> {dataset}", flush=True)
        glide("ingest", urls, "-o", dataset, "--config", args.config)
    if not args.skip_train:
        train_and_sample(args, out, dataset)
    print(f"\n== demo finished in {time.time() - t0:.0f} s; everything is under {out}")
    print(f"   dataset:  {dataset}  (manifest.json, shards/, rejects/)")
    return 0


def train_and_sample(args, out: Path, dataset: Path) -> None:
    steps = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    runs = {kind: out / "runs" / kind for kind in ("base", "upsampler")}
    for n, kind in enumerate(("base", "upsampler"), start=3):
        print(f"\n== {n}. train the {kind} -> {runs[kind]}", flush=True)
        glide("train", kind, "--data", dataset, "--config", args.train_config, "-o", runs[kind], *steps)
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(DEMO_PROMPTS) + "\n")
    samples, base_samples = out / "samples", out / "samples-base"
    print(f"\n== 5. sample with classifier-free guidance, then upsample -> {samples}", flush=True)
    sample_args = ["--prompts", prompts, "--per-prompt", "4", "--guidance", "3", "--steps", "100", "--seed", "0"]
    glide("sample", "--model", runs["base"], "--upsampler", runs["upsampler"], *sample_args, "-o", samples)
    # the same seed draws the same base images: the 16px samples the upsampler started from
    glide("sample", "--model", runs["base"], *sample_args, "--no-progress", "-o", base_samples)
    print(f"\n   checkpoints: {runs['base'] / 'exports'}  {runs['upsampler'] / 'exports'}")
    print(f"   sample grid: {samples / 'grid.png'}  (prompts: {prompts}; 16px base: {base_samples / 'grid.png'})")
    for name, folder in (("16px base", base_samples), ("64px upsampled", samples)):
        s = score(folder)
        print(f"   captioned colours ({name}): background {s['background_right']}/{s['images']}, "
              f"shape {s['foreground_right']}/{s['images']}  (python -m pipeline.caption_accuracy {folder})")
    print(f"   training curves: tensorboard --logdir {out / 'runs'}")


if __name__ == "__main__":
    sys.exit(main())
