"""How well a CLIP's image features separate the filters' categories, before any labelling.

    python -m benchmarks.clip_probe --clip checkpoints/demo/clip [--clip RUN/exports/step-N ...]
                                    [--seed 1] [--count 4000] [--config configs/sample-world.yaml]

Makes a sample world from --config with --seed and --count (the truth of every image known), embeds
its images with each CLIP (the three-crop mean-pooled feature `glide embed` computes, on the images
resized to the crawl's ingest size), and per category scores every image out of fold (an RBF-SVM,
C 10, fitted on the other three of four stratified folds): ROC AUC, and the share of clean pairs (no
category) removed at the threshold that misses 1% of the positives, and at 0.5% and 0.25%. The 1%
share is what `glide fit-filters` at --target-fnr 0.01 would remove with unlimited labels, so it says
whether a CLIP can meet the filters' bar (under 10%) at all; the 0.25% share is about what its
no-miss rule on ~400 held-out positives asks for. Every image is scored once, so the quantiles rest
on as many positives as the world has (a random half left the 1% quantile on 2-4 of them, and it
swung by tens of points between neighbouring checkpoints). Ends with one JSON line {"benchmark":
"clip_probe", "clips": {SPEC: {CATEGORY: {"auc", "clean_removed", "clean_removed_0.5%",
"clean_removed_0.25%"}}}}.

--ceiling N also trains the stand-in detector (evaluation.standin_detector, without blur) for N
steps straight on the truth of another world (--ceiling-count images, seed --seed + 1), the three
categories as labels, and scores it on the same half: what the crawl's pixels allow when features
are learned for the task, the bar a CLIP's features are measured against.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from pipeline.demo_steps import WORLD_CONFIG

TARGET_FNR = 0.01


def world_images(config: Path, seed: int, count: int, out: Path):
    """(truth table, PIL images at the ingest size) of a fresh sample world."""
    import pyarrow.parquet as pq
    from PIL import Image

    from pipeline.config import load_config
    from pipeline.sample_world import generate_world

    cfg = load_config(str(config))
    world = cfg.sample_world.model_copy(update={"seed": seed, "count": count})
    generate_world(world, out)
    truth = pq.read_table(out / "truth.parquet").to_pandas()
    size = cfg.ingest.image_size
    images = [Image.open(out / p).convert("RGB").resize((size, size), Image.BICUBIC) for p in truth.path]
    return truth, images


QUANTILES = {"clean_removed": TARGET_FNR, "clean_removed_0.5%": 0.005, "clean_removed_0.25%": 0.0025}
FOLDS = 4


def probe(features: np.ndarray, truth, seed: int = 0, fitted: np.ndarray | None = None) -> dict:
    """Per category: every image's RBF-SVM score out of fold (fitted on the other folds); `fitted`
    [N, 3]: scores already made per category (the ceiling's), used as they are."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    from filtering.labels.ground_truth import CATEGORIES

    clean = ~truth[list(CATEGORIES)].to_numpy().any(axis=1)
    out = {}
    for cat in CATEGORIES:
        y = truth[cat].to_numpy()
        if fitted is not None:
            s = fitted[:, list(CATEGORIES).index(cat)]
        else:
            s = np.zeros(len(y))
            for fit, held in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(features, y):
                svm = SVC(C=10, gamma="scale", class_weight="balanced").fit(features[fit], y[fit])
                s[held] = svm.decision_function(features[held])
        positives = np.sort(s[y])
        out[cat] = {"auc": round(float(roc_auc_score(y, s)), 4)}
        for key, q in QUANTILES.items():
            threshold = positives[int(q * len(positives))]    # fires on all but a share q of positives
            out[cat][key] = round(float((s[clean] >= threshold).mean()), 4)
    return out


def supervised_ceiling(config: Path, seed: int, count: int, steps: int, tmp: Path, test_images, truth) -> dict:
    """The probe's figures for the stand-in detector (evaluation.standin_detector, no blur) trained on
    the truth of a world with `seed` (not the probe's), at the crawl's image size."""
    from pipeline.config import load_config
    from evaluation.standin_detector import train_standin_detector

    world_images(config, seed, count, tmp / "ceiling-world")
    detector = train_standin_detector(tmp / "ceiling-world", steps=steps, blur_size=0,
                                      input_size=load_config(str(config)).ingest.image_size)
    scores = detector.scores(test_images)
    return probe(scores, truth, fitted=scores)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clip_probe", description=__doc__.splitlines()[0])
    p.add_argument("--clip", action="append", required=True, help="CLIP spec as glide embed --clip takes it (repeatable)")
    p.add_argument("--config", default=str(WORLD_CONFIG), help="config whose sample_world and ingest size are used")
    p.add_argument("--seed", type=int, default=1, help="world seed (the demo's filters are fitted on seed 0)")
    p.add_argument("--count", type=int, default=4000, help="images in the world")
    p.add_argument("--ceiling", type=int, default=0, metavar="STEPS",
                   help="also train the supervised CNN for STEPS steps of 64 images (1500: ~15 min on 2 cores)")
    p.add_argument("--ceiling-count", type=int, default=8000, help="images of the ceiling's training world")
    args = p.parse_args(argv)

    from filtering.clip_features import load_clip_features

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        truth, images = world_images(Path(args.config), args.seed, args.count, Path(tmp) / "world")
        if args.ceiling:
            result["supervised-ceiling"] = supervised_ceiling(Path(args.config), args.seed + 1, args.ceiling_count,
                                                              args.ceiling, Path(tmp), images, truth)
    print("per category: ROC AUC / clean pairs removed where 1%, 0.5%, 0.25% of positives are missed")
    print(f"{'CLIP':<48}" + "".join(f"{c:>41}" for c in ("people", "violence", "hate")))
    for spec in [*result, *args.clip]:
        if spec not in result:
            result[spec] = probe(load_clip_features(spec).encode_images(images).numpy(), truth)
        print(f"{spec:<48}" + "".join(f"{r['auc']:>18.3f} / " + " ".join(f"{100 * r[k]:5.1f}%" for k in QUANTILES)
                                      for r in result[spec].values()), flush=True)
    print(json.dumps({"benchmark": "clip_probe", "seed": args.seed, "count": args.count, "clips": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
