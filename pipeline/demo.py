"""`make demo FROM_SCRATCH=1`: the demo pipeline with every model trained here instead of shipped.

`make demo` itself is `glide run configs/demo.yaml` (then `python -m pipeline.demo_summary demo-output`):
the shipped CLIP, the shipped base briefly fine-tuned on the filtered shards, the shipped upsampler.
From scratch, two things differ, so this module runs them around the same pipeline:

    1  the clean CLIP is trained first, on the crawl of its own world (configs/clip-world.yaml, another
       seed; its captions name every stand-in): `glide sample-world`-style serving, `glide ingest`,
       `glide train clip --clip-mode clean` into OUT/runs/clip. It is not a stage of the pipeline: it
       reads another world than the one the pipeline crawls.
    2  `glide run OUT/pipeline.yaml`: configs/demo.yaml with embed.clip = that CLIP, and base and
       upsampler trained from scratch on the filtered shards (configs/demo.yaml's `train` section,
       the lengths of configs/train-demo.yaml), then sampled and evaluated by the trained pair.

OUT is demo-output-from-scratch by default: a separate folder, so switching between the two demos
never makes one's pipeline remove the other's training runs. Every command is printed before it runs;
the end is the same summary as `make demo`'s.

    python -m pipeline.demo --from-scratch [-o OUT] [--max-steps N]   # N: every model's training length
    python -m pipeline.demo                                           # = make demo
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from pipeline.config import load_config
from pipeline.demo_steps import REPO, SHIPPED, WORLD_CONFIG, Step, glide, in_repo
from pipeline.demo_summary import main as summary_main

DEMO_CONFIG = REPO / "configs" / "demo.yaml"
CLIP_CONFIG = REPO / "configs" / "train-clip-demo.yaml"
CLIP_WORLD_CONFIG = REPO / "configs" / "clip-world.yaml"


def crawl_world(config: str | Path, out: Path, world: str = "world", dataset: str = "dataset",
                step: str = "1-2") -> tuple[Path, Step]:
    """Generate and serve the sample world of CONFIG into OUT/WORLD, crawl it with `glide ingest` into
    OUT/DATASET."""
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    cfg = load_config(config)
    world_dir, dataset_dir = out / world, out / dataset
    first, _, second = step.partition("-")
    print(f"== {first}. sample world of {in_repo(config)} -> {world_dir}", flush=True)
    info = generate_world(cfg.sample_world, world_dir)
    print(f"   {info.count} images, {cfg.sample_world.image_size}px, seed {cfg.sample_world.seed}; "
          + ", ".join(f"{n} show {c}" for c, n in info.categories.items()))
    with SampleWorldServer(world_dir, host=cfg.sample_world.host, port=cfg.sample_world.port,
                           slow_seconds=cfg.sample_world.slow_seconds) as server:
        urls = write_url_list(world_dir, server.base_url)
        print(f"   serving on {server.base_url}; URL list {urls}")
        print(f"== {second or first}. ingest: crawl the URL list into Arrow shards -> {dataset_dir}", flush=True)
        result = glide("ingest", urls, "-o", dataset_dir, "--config", config)
    return dataset_dir, result


def train_clip(out: Path, run: Path, max_steps: int | None = None) -> tuple[Step, Step, Path]:
    """Step 3 from scratch: crawl the CLIP's own world (configs/clip-world.yaml) into OUT/clip-world and
    OUT/clip-dataset, and train the clean CLIP on it (`glide train clip --clip-mode clean`) into RUN.
    Returns the ingest and training steps and the CLIP's dataset."""
    print(f"\n== 3. the clean CLIP, trained on its own world (another seed; captions name every stand-in)",
          flush=True)
    dataset, ingest = crawl_world(CLIP_WORLD_CONFIG, out, "clip-world", "clip-dataset", step="3.1-3.2")
    print(f"\n== 3.3. train the clean CLIP on {in_repo(dataset)} -> {run}", flush=True)
    steps = ["--max-steps", str(max_steps)] if max_steps else []
    train = glide("train", "clip", "--clip-mode", "clean", "--data", dataset, "--config", CLIP_CONFIG, "-o", run,
                  *steps)
    return ingest, train, dataset


def from_scratch_config(out: Path, clip: Path, max_steps: int | None = None) -> Path:
    """OUT/pipeline.yaml: configs/demo.yaml with the CLIP at CLIP and base and upsampler trained from
    scratch on the filtered shards (the sample and evaluate stages then use the trained pair)."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["embed"]["clip"] = str(clip)
    run = config["run"]
    run["out"] = in_repo(out)
    steps = {"max_steps": max_steps} if max_steps else {}
    run["train"] = {"base": dict(steps), "upsampler": dict(steps)}
    run["sample"].pop("upsampler", None)
    path = out / "pipeline.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by python -m pipeline.demo --from-scratch from {in_repo(DEMO_CONFIG)}\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def run_pipeline(config: Path) -> None:
    """`glide run CONFIG` in this process, printed first; a failed stage ends the demo with its code."""
    from pipeline.cli import main as glide_main

    print(f"\n$ glide run {in_repo(config)}", flush=True)
    code = glide_main(["run", in_repo(config)])
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--from-scratch", action="store_true",
                        help=f"train the CLIP, base and upsampler instead of using {SHIPPED.relative_to(REPO)}/")
    parser.add_argument("-o", "--out", default=None,
                        help="where everything is written, with --from-scratch (default demo-output-from-scratch)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override the training length of every model trained (with --from-scratch)")
    args = parser.parse_args(argv)

    out = Path(args.out or "demo-output-from-scratch").resolve()
    os.chdir(REPO)  # the configs name their checkpoints relative to the checkout, as `make demo` runs them
    if not args.from_scratch:
        if args.out or args.max_steps:
            parser.error("-o and --max-steps go with --from-scratch (make demo's OUT is configs/demo.yaml's run.out)")
        run_pipeline(DEMO_CONFIG)
        return summary_main([yaml.safe_load(DEMO_CONFIG.read_text())["run"]["out"]])
    clip = out / "runs" / "clip"
    train_clip(out, clip, args.max_steps)
    config = from_scratch_config(out, clip, args.max_steps)
    print(f"\n== 4-10. the demo pipeline on the trained CLIP, base and upsampler trained from scratch: "
          f"{in_repo(config)}", flush=True)
    run_pipeline(config)
    return summary_main([in_repo(out)])


if __name__ == "__main__":
    sys.exit(main())
