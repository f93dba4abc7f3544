"""`make demo`: the main job end to end on the embedded defaults, every stage the real `glide` command.

    1-2  sample world, served on 127.0.0.1 -> `glide ingest` -> Arrow shards
    3    the clean CLIP: the shipped checkpoints/demo/clip (or, --from-scratch, `glide train clip
         --clip-mode clean` into OUT/runs/clip on the crawl of its own world, configs/clip-world.yaml)
    4    `glide embed` -> the CLIP features
    5-7  labels from the world's ground truth, active learning, `glide fit-filters`, `glide filter`
         (pipeline.demo_filters) -> OUT/filters, OUT/dataset-filtered
    8    train on the filtered shards: the shipped base fine-tuned briefly (or, --from-scratch, base
         and upsampler trained on them from scratch)
    9    `glide sample` with classifier-free guidance, and the caption colour check
    10   `glide evaluate` at guidance 1 and 3 on held-out prompts (pipeline.evaluation_demo): caption
         accuracy by the shipped scene classifier, FID on its features, the HTML report

Every command is printed before it runs; the end lists where everything is.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.caption_accuracy import score
from pipeline.config import load_config
from pipeline.demo_filters import DEMO_PLAN, label_fit_filter
from pipeline.demo_steps import REPO, SHIPPED, WORLD_CONFIG, Step, glide, in_repo
from pipeline.evaluation_demo import evaluate_guidance

TRAIN_CONFIG = REPO / "configs" / "train-demo.yaml"
CLIP_CONFIG = REPO / "configs" / "train-clip-demo.yaml"
CLIP_WORLD_CONFIG = REPO / "configs" / "clip-world.yaml"
KINDS = ("base", "upsampler")
PROVENANCE_FILE = "provenance.json"
FINE_TUNE_STEPS = 100  # the shipped base's brief fine-tuning on the filtered shards (default demo)
FINE_TUNE_LR = 2e-4
DEMO_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a purple background",
    "a green triangle on a white background",
    "a blue star on an orange background",
]


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


def train_models(dataset: Path, train_config: str | Path, runs: Path, max_steps: int | None = None,
                 first_step: int = 8, kinds: tuple[str, ...] | list[str] = KINDS) -> dict[str, Step]:
    """`glide train base` and `glide train upsampler` on DATASET into RUNS/base and RUNS/upsampler."""
    steps = ["--max-steps", str(max_steps)] if max_steps else []
    done = {}
    for n, kind in enumerate(kinds):
        print(f"\n== {first_step}.{n + 1}. train the {kind} on {in_repo(dataset)} -> {runs / kind}", flush=True)
        done[kind] = glide("train", kind, "--data", dataset, "--config", train_config, "-o", runs / kind, *steps)
    return done


def fine_tune_base(dataset: Path, run: Path, steps: int = FINE_TUNE_STEPS) -> Step:
    """Step 8 by default: the shipped base (trained on the unfiltered crawl of an older world, see its
    provenance.json) trained `steps` more steps on the filtered shards, at a tenth of its learning rate."""
    print(f"\n== 8. train on the filtered shards: the shipped base, {steps} more steps on {in_repo(dataset)} -> "
          f"{run}", flush=True)
    print(f"   (a brief fine-tuning that fits the demo's time; `make demo FROM_SCRATCH=1` trains base and "
          f"upsampler on the filtered shards from scratch)")
    return glide("train", "base", "--data", dataset, "--config", TRAIN_CONFIG, "--init", SHIPPED / "base",
                 "--max-steps", steps, "--lr", FINE_TUNE_LR, "--warmup-steps", 10, "--save-every", steps,
                 "-o", run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=str(REPO / "demo-output"), help="where everything is written")
    parser.add_argument("--config", default=str(WORLD_CONFIG), help="pipeline config of the world and ingest")
    parser.add_argument("--from-scratch", action="store_true",
                        help=f"train the CLIP, base and upsampler instead of using {SHIPPED.relative_to(REPO)}/")
    parser.add_argument("--train-config", default=str(TRAIN_CONFIG), help="pipeline config of the training")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override the training length of every model trained (with --from-scratch)")
    parser.add_argument("--skip-sample", action="store_true", help="stop after the training on the filtered shards")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    t0 = time.time()
    steps: dict[str, Step] = {}
    dataset, steps["ingest"] = crawl_world(args.config, out)
    if args.from_scratch:
        clip = out / "runs" / "clip"
        steps["ingest clip world"], steps["train clip"], _ = train_clip(out, clip, args.max_steps)
    else:
        clip = SHIPPED / "clip"
        print(f"\n== 3. the clean CLIP: the shipped {in_repo(clip)} (retrain: make demo FROM_SCRATCH=1)")
        describe_shipped({"clip": clip})
    embeddings = out / "dataset-emb"
    print(f"\n== 4. CLIP features of every pair -> {embeddings}", flush=True)
    steps["embed"] = glide("embed", dataset, "-o", embeddings, "--clip", clip)
    filters = label_fit_filter(embeddings, out / "world", out, DEMO_PLAN, first_step=5)
    steps.update(filters.steps)
    if args.from_scratch:
        trained = train_models(filters.filtered, args.train_config, out / "runs", args.max_steps)
        steps.update({f"train {kind}": step for kind, step in trained.items()})
        models = {kind: out / "runs" / kind for kind in KINDS}
    else:
        steps["train base"] = fine_tune_base(filters.filtered, out / "runs" / "base-filtered")
        models = {"base": out / "runs" / "base-filtered", "upsampler": SHIPPED / "upsampler"}
        print("   the upsampler is the shipped one, trained on the unfiltered crawl of an older world:")
        describe_shipped({"upsampler": SHIPPED / "upsampler"})
    if not args.skip_sample:
        steps.update(sample_and_score(models, out))
        steps.update(evaluate_guidance(models, out))
    total = time.time() - t0
    (out / "timings.json").write_text(json.dumps({"total_s": round(total, 1),
                                                  "steps": {k: v.wall_s for k, v in steps.items()}}, indent=2) + "\n")
    print_summary(out, dataset, clip, embeddings, filters, models, total, args.from_scratch)
    return 0


def print_summary(out: Path, dataset: Path, clip: Path, embeddings: Path, filters, models: dict, total: float,
                  from_scratch: bool) -> None:
    print(f"\n== demo finished in {total / 60:.1f} min (every step's seconds: {in_repo(out / 'timings.json')})")
    print("   filters (FNR bound on the held-out labels, share of this crawl each removes):")
    for name, f in filters.figures.items():
        print(f"      {name:<10} FNR {f['fnr']:.2%} (95% bound {f['fnr_upper_95']:.2%} on {f['held_out_positives']} "
              f"held-out positives), removes {f['removed_fraction']:.1%}")
    rows = [
        ("world and truth", f"{in_repo(out / 'world')}  (truth.parquet, index.html)"),
        ("crawl", f"{in_repo(dataset)}  (manifest.json, shards/, rejects/)"),
        ("CLIP", f"{in_repo(clip)}" + ("" if from_scratch else "  (shipped; make demo FROM_SCRATCH=1 trains it "
                                                                  f"into {in_repo(out / 'runs' / 'clip')})")),
        ("embeddings", in_repo(embeddings)),
        ("labels", f"{in_repo(filters.labels_db)}  (glide label status --db {in_repo(filters.labels_db)})"),
        ("filters", f"{in_repo(filters.filters)}  (fit report: {in_repo(filters.fit_report)})"),
        ("filtered dataset", f"{in_repo(filters.filtered)}  (filter report: {in_repo(filters.filter_report)})"),
        ("base", f"{in_repo(models['base'])}  (trained on the filtered shards)"),
        ("upsampler", in_repo(models["upsampler"]) + ("  (trained on the filtered shards)" if from_scratch
                                                       else "  (shipped, trained on an unfiltered crawl)")),
        ("samples", f"{in_repo(out / 'samples' / 'grid.png')}  (16px base: {in_repo(out / 'samples-base' / 'grid.png')})"),
        ("evaluation", f"{in_repo(out / 'evaluation' / 'index.html')}  (guidance 1 vs 3; glide report "
                       f"{in_repo(out / 'evaluation')} rebuilds it)"),
    ]
    for what, where in rows:
        print(f"   {what + ':':<18}{where}")
    print("   apply these filters to another crawl (the same CLIP makes its features):")
    print(f"      glide embed OTHER_DATASET -o OTHER_EMB --clip {in_repo(clip)}")
    print(f"      glide filter OTHER_EMB --filters {in_repo(filters.filters)} -o OTHER_FILTERED")
    print(f"   check them on a held-out world: python -m benchmarks.filter_quality --filters {in_repo(filters.filters)}")
    if from_scratch:
        print(f"   training curves: tensorboard --logdir {in_repo(out / 'runs')}")


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


def sample_and_score(models: dict[str, Path], out: Path) -> dict[str, Step]:
    """Step 9: four captions with classifier-free guidance, upsampled and at the base's 16px."""
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(DEMO_PROMPTS) + "\n")
    samples, base_samples = out / "samples", out / "samples-base"
    print(f"\n== 9. sample with classifier-free guidance, then upsample -> {samples}", flush=True)
    sample_args = ["--prompts", prompts, "--per-prompt", "4", "--guidance", "3", "--steps", "100", "--seed", "0"]
    done = {"sample": glide("sample", "--model", models["base"], "--upsampler", models["upsampler"], *sample_args,
                            "-o", samples)}
    # the same seed draws the same base images: the 16px samples the upsampler started from
    done["sample base"] = glide("sample", "--model", models["base"], *sample_args, "--no-progress", "-o", base_samples)
    print(f"\n   sample grid: {samples / 'grid.png'}  (prompts: {prompts}; 16px base: {base_samples / 'grid.png'})")
    for name, folder in (("16px base", base_samples), ("64px upsampled", samples)):
        s = score(folder)
        print(f"   captioned colours ({name}): background {s['background_right']}/{s['images']}, "
              f"shape {s['foreground_right']}/{s['images']}  (python -m pipeline.caption_accuracy {folder})")
    return done


if __name__ == "__main__":
    sys.exit(main())
