"""How well a CLIP's image features separate the filters' categories, before any labelling.

    python -m benchmarks.clip_probe --clip checkpoints/demo/clip [--clip RUN/exports/step-N ...]
                                    [--seed 1] [--count 4000] [--config configs/sample-world.yaml]

Makes a sample world from --config with --seed and --count (the truth of every image known), embeds
its images with each CLIP (the three-crop mean-pooled feature `glide embed` computes, on the images
resized to the crawl's ingest size), and per category fits an RBF-SVM on a random half and scores the
other half: ROC AUC, and the share of clean pairs (no category) removed at the threshold that misses
1% of the positives. That share is what `glide fit-filters` at --target-fnr 0.01 would remove with
unlimited labels, so it says whether a CLIP can meet the filters' bar (under 10%) at all. Ends with
one JSON line {"benchmark": "clip_probe", "clips": {SPEC: {CATEGORY: {"auc", "clean_removed"}}}}.

--ceiling N also trains a small CNN for N steps straight on the truth of another world (--ceiling-count
images, seed --seed + 1), the three categories as labels, and scores it on the same half: what the
crawl's pixels allow when features are learned for the task, the bar a CLIP's features are measured
against.
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


def probe(features: np.ndarray, truth, seed: int = 0, fitted: np.ndarray | None = None) -> dict:
    """Per category: an RBF-SVM fitted on a random half, scored on the other; `fitted` [N, 3]: scores
    already made per category (the ceiling's), scored on the same half with no SVM."""
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import SVC

    from filtering.labels.ground_truth import CATEGORIES

    order = np.random.default_rng(seed).permutation(len(features))
    fit, score = order[: len(order) // 2], order[len(order) // 2:]
    clean = ~truth[list(CATEGORIES)].to_numpy().any(axis=1)[score]
    out = {}
    for cat in CATEGORIES:
        y = truth[cat].to_numpy()
        if fitted is not None:
            s = fitted[score, list(CATEGORIES).index(cat)]
        else:
            svm = SVC(C=10, gamma="scale", class_weight="balanced").fit(features[fit], y[fit])
            s = svm.decision_function(features[score])
        positives = np.sort(s[y[score]])
        threshold = positives[int(TARGET_FNR * len(positives))]    # fires on all but 1% of positives
        out[cat] = {"auc": round(float(roc_auc_score(y[score], s)), 4),
                    "clean_removed": round(float((s[clean] >= threshold).mean()), 4)}
    return out


def _ceiling_network():
    import torch.nn as nn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    # global max pooling: "is there a stand-in anywhere", wherever it sits and however small it is
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 128),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 3))


def _tensor(images):
    import torch

    return torch.tensor(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 127.5 - 1


def supervised_ceiling(config: Path, seed: int, count: int, steps: int, tmp: Path, test_images, truth) -> dict:
    """The probe's figures for a CNN trained on the truth of a world with `seed` (not the probe's)."""
    import torch
    import torch.nn.functional as F

    from filtering.labels.ground_truth import CATEGORIES

    train_truth, train_images = world_images(config, seed, count, tmp / "ceiling-world")
    x, y = _tensor(train_images), torch.tensor(train_truth[list(CATEGORIES)].to_numpy().astype(np.float32))
    torch.manual_seed(0)
    net = _ceiling_network()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    for step in range(steps):
        idx = torch.randint(len(x), (64,))
        batch = x[idx].flip(3) if step % 2 else x[idx]
        loss = F.binary_cross_entropy_with_logits(net(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    test = _tensor(test_images)
    with torch.no_grad():
        scores = torch.cat([net(test[i:i + 256]) for i in range(0, len(test), 256)]).numpy()
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
    print(f"{'CLIP':<48}" + "".join(f"{c + ' AUC / clean removed':>32}" for c in ("people", "violence", "hate")))
    for spec in [*result, *args.clip]:
        if spec not in result:
            result[spec] = probe(load_clip_features(spec).encode_images(images).numpy(), truth)
        print(f"{spec:<48}" + "".join(f"{r['auc']:>22.3f} / {100 * r['clean_removed']:5.1f}%" for r in result[spec].values()),
              flush=True)
    print(json.dumps({"benchmark": "clip_probe", "seed": args.seed, "count": args.count, "clips": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
