"""The demo's evaluation: `glide evaluate` of a demo model at guidance 1 and 3 on sample-world prompts,
with caption accuracy read by the shipped scene classifier. `make demo` runs it as the evaluate stage
of `glide run configs/demo.yaml` (its `run.evaluate` section; the stage uses `held_out_world`); on its
own, for any base and upsampler:

    python -m pipeline.evaluation_demo -o runs/demo-eval          # the shipped base + upsampler
    python -m pipeline.evaluation_demo --base runs/demo/runs/base-filtered -o runs/demo-eval

It makes a held-out sample world (the demo world's config with another seed: prompts the model never
saw, and real images for the reference statistics), writes its first captions as the prompts (without
the stand-in mentions), runs `glide evaluate` and prints both settings' caption accuracy and the
report's path. The samples are cached in the report folder: a second run only rebuilds the report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.demo_steps import SHIPPED, WORLD_CONFIG, Step, glide, in_repo

if TYPE_CHECKING:
    from pipeline.config import SampleWorldConfig

SCENE_CLASSIFIER = SHIPPED / "scene-classifier"
HELD_OUT_SEED = 7          # the demo world is seed 0, the scene classifier's worlds 101 and 202
REFERENCE_IMAGES = 300
SAMPLES = 64               # per setting: about a minute of sampling on 2 free cores (32 is too noisy)
GUIDANCE = "1,3"


def held_out_world(world: "SampleWorldConfig", out: Path, seed: int = HELD_OUT_SEED, images: int = REFERENCE_IMAGES,
                   prompts_count: int = SAMPLES) -> tuple[Path, Path]:
    """(world folder, prompts file) under OUT: the world of WORLD's config with another SEED and IMAGES
    images, and its first `prompts_count` captions without the stand-in mentions. Also the evaluate
    stage's held-out world in `glide run` (pipeline.run.stages)."""
    import pyarrow.parquet as pq

    from pipeline.sample_world import generate_world

    folder = out / "world"
    generate_world(world.model_copy(update={"seed": seed, "count": images}), folder)
    captions = pq.read_table(folder / "truth.parquet", columns=["caption"]).column("caption").to_pylist()
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(c.split(", with ")[0] for c in captions[:prompts_count]) + "\n")
    return folder, prompts


def caption_accuracy_lines(report: Path) -> list[str]:
    """Each setting's caption accuracy in REPORT/metrics.json, one line each."""
    lines = []
    for name, m in json.loads((report / "metrics.json").read_text())["settings"].items():
        acc = m.get("caption_accuracy")
        if not acc:
            continue  # no scene classifier, or prompts that are not sample-world captions
        parts = ", ".join(f"{k} {100 * acc[k]:.0f}%" for k in ("background", "colour", "kind") if k in acc)
        lines.append(f"{name}: caption accuracy {100 * acc['all']:.1f}% ({parts}; {acc['samples']} samples)")
    return lines


def evaluate_guidance(models: dict[str, Path], out: Path, samples: int = SAMPLES) -> dict[str, Step]:
    """`glide evaluate` of models["base"] (+ models["upsampler"]) at guidance 1 and 3 into OUT/evaluation."""
    from pipeline.config import load_config

    report = out / "evaluation"
    print(f"\n== evaluate: guidance {GUIDANCE} on held-out sample-world prompts -> {in_repo(report)}", flush=True)
    world, prompts = held_out_world(load_config(str(WORLD_CONFIG)).sample_world, out / "evaluation-world",
                                    prompts_count=samples)
    upsampler = ["--upsampler", models["upsampler"]] if models.get("upsampler") else []
    step = glide("evaluate", "--model", models["base"], *upsampler, "--prompts", prompts,
                 "--reference", world / "images", "--guidance", GUIDANCE, "--features", f"scene:{SCENE_CLASSIFIER}",
                 "--scene-classifier", SCENE_CLASSIFIER, "--samples-per-setting", samples, "--steps", "50",
                 "-o", report)
    for line in caption_accuracy_lines(report):
        print(f"   {line}")
    print(f"   report: {in_repo(report / 'index.html')}  (rebuild: glide report {in_repo(report)})")
    return {"evaluate": step}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluate the demo model at guidance 1 and 3 (caption accuracy).")
    p.add_argument("--base", default=str(SHIPPED / "base"), help="base checkpoint (default: the shipped one)")
    p.add_argument("--upsampler", default=str(SHIPPED / "upsampler"),
                   help="upsampler checkpoint (default: the shipped one; '' for none)")
    p.add_argument("--samples", type=int, default=SAMPLES, help=f"samples per setting (default {SAMPLES})")
    p.add_argument("-o", "--output", required=True, help="folder for the world, prompts and report")
    args = p.parse_args(argv)
    evaluate_guidance({"base": Path(args.base), "upsampler": Path(args.upsampler) if args.upsampler else None},
                      Path(args.output), samples=args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
