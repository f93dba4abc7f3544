"""The demo's evaluation step: `glide evaluate` of the demo model at guidance 1 and 3 on sample-world
prompts, with caption accuracy read by the shipped scene classifier. `make demo` calls
`evaluate_guidance(models, out)`; on its own:

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

from pipeline.demo_steps import SHIPPED, WORLD_CONFIG, Step, glide, in_repo

SCENE_CLASSIFIER = SHIPPED / "scene-classifier"
HELD_OUT_SEED = 7          # the demo world is seed 0, the scene classifier's worlds 101 and 202
REFERENCE_IMAGES = 300
SAMPLES = 64               # per setting: about a minute of sampling on 2 free cores (32 is too noisy)
GUIDANCE = "1,3"


def held_out_world(out: Path, prompts_count: int = SAMPLES) -> tuple[Path, Path]:
    """(world folder, prompts file): the demo world's config with HELD_OUT_SEED, and its first
    `prompts_count` captions without the stand-in mentions."""
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.sample_world import generate_world

    cfg = load_config(str(WORLD_CONFIG)).sample_world
    cfg.seed, cfg.count = HELD_OUT_SEED, REFERENCE_IMAGES
    world = out / "world"
    generate_world(cfg, world)
    captions = pq.read_table(world / "truth.parquet", columns=["caption"]).column("caption").to_pylist()
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(c.split(", with ")[0] for c in captions[:prompts_count]) + "\n")
    return world, prompts


def evaluate_guidance(models: dict[str, Path], out: Path, samples: int = SAMPLES) -> dict[str, Step]:
    """`glide evaluate` of models["base"] (+ models["upsampler"]) at guidance 1 and 3 into OUT/evaluation."""
    report = out / "evaluation"
    print(f"\n== evaluate: guidance {GUIDANCE} on held-out sample-world prompts -> {in_repo(report)}", flush=True)
    world, prompts = held_out_world(out / "evaluation-world", samples)
    upsampler = ["--upsampler", models["upsampler"]] if models.get("upsampler") else []
    step = glide("evaluate", "--model", models["base"], *upsampler, "--prompts", prompts,
                 "--reference", world / "images", "--guidance", GUIDANCE, "--features", f"scene:{SCENE_CLASSIFIER}",
                 "--scene-classifier", SCENE_CLASSIFIER, "--samples-per-setting", samples, "--steps", "50",
                 "-o", report)
    metrics = json.loads((report / "metrics.json").read_text())["settings"]
    for name, m in metrics.items():
        acc = m["caption_accuracy"]
        parts = ", ".join(f"{k} {100 * acc[k]:.0f}%" for k in ("background", "colour", "kind") if k in acc)
        print(f"   {name}: caption accuracy {100 * acc['all']:.1f}% ({parts}; {acc['samples']} samples)")
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
