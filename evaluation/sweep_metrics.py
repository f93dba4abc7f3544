"""Every metric of one sweep setting's samples: image metrics against the reference statistics, the
CLIP score when a CLIP is given, and caption accuracy when the prompts are sample-world captions and a
scene classifier is given.

    metrics = setting_metrics(images, prompts, extractor=..., reference=..., clip=..., classifier=...)
    # {"fid", "inception_score", ..., "clip_score": float | None, "caption_accuracy": {...} | None, "notes"}
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from evaluation.scene_attributes import attributes_of_caption


def load_sample_images(report: Path, paths: Sequence[str]) -> np.ndarray:
    """uint8 [N, S, S, 3] of the sample PNGs (paths relative to the report folder)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(report / p).convert("RGB")) for p in paths])


def caption_accuracy(classifier, images: np.ndarray, prompts: Sequence[str]) -> dict:
    """Share of samples whose pixels show what their caption says, per attribute the classifier has
    (background, colour and kind of the lead shape, count), "relation" for two-shape captions (the
    axis and the lead shape's colour both right), and "all" (every attribute measured on it right)."""
    predicted = classifier.predict(images)
    wanted = [attributes_of_caption(p) for p in prompts]
    names = [a for a in ("background", "colour", "kind", "count") if a in classifier.classes]
    right = {a: [] for a in names}
    relation, every = [], []
    for got, want in zip(predicted, wanted):
        oks = []
        for a in names:
            right[a].append(got[a] == want[a])
            oks.append(got[a] == want[a])
        if want["count"] == "2" and "axis" in classifier.classes:
            ok = got["axis"] == want["axis"] and got["colour"] == want["colour"]
            relation.append(ok)
            oks.append(ok)
        every.append(all(oks))
    out = {a: float(np.mean(v)) for a, v in right.items()}
    if relation:
        out["relation"] = float(np.mean(relation))
    out["all"] = float(np.mean(every))
    out["samples"] = len(prompts)
    out["predictions"] = predicted
    return out


def setting_metrics(images: np.ndarray, prompts: Sequence[str], *, extractor, reference, clip=None,
                    classifier=None) -> dict:
    from evaluation.clip_score import clip_score
    from evaluation.image_metrics import image_metrics

    out = image_metrics(extractor.extract(images), reference, extractor)
    out["clip_score"] = clip_score(images, list(prompts), clip) if clip is not None else None
    if clip is None:
        out["notes"].append("no CLIP score: no --score-clip given")
    out["caption_accuracy"] = None
    if classifier is not None:
        out["caption_accuracy"] = caption_accuracy(classifier, images, prompts)
    return out


def accuracy_summary(metrics: dict) -> Optional[dict]:
    """The caption accuracy without its per-sample predictions (for tables)."""
    acc = metrics.get("caption_accuracy")
    return None if acc is None else {k: v for k, v in acc.items() if k != "predictions"}
