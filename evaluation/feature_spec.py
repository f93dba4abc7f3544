"""`--features KIND:PATH`: which network the image metrics run on.

    inception:PATH   the FID Inception-v3 from a local pt_inception weights file (the paper's FID / IS)
    clip:MODEL       a CLIP image encoder (ARCH=WEIGHTS or a clean CLIP checkpoint folder) standing in
    scene:DIR        the sample world's scene classifier (evaluation.scene_features)
"""
from __future__ import annotations

from pathlib import Path

import shards as sh
from evaluation.features import FeatureExtractor, load_feature_extractor

KINDS = ("inception", "clip", "scene")


def parse_features(spec: str) -> tuple[str, str]:
    """(kind, path); UserError naming --features when it is not KIND:PATH or a file path is missing."""
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in KINDS or not path:
        raise sh.UserError(f"--features: {spec!r} is not KIND:PATH with KIND one of {', '.join(KINDS)} "
                           f"(e.g. inception:pt_inception-2015-12-05-6726825d.pth)")
    if kind in ("inception", "scene") and not Path(path).exists():
        raise sh.UserError(f"--features: {path}: no such {'file' if kind == 'inception' else 'folder'}")
    return kind, path


def load_features(spec: str, device: str = "cpu") -> FeatureExtractor:
    kind, path = parse_features(spec)
    if kind == "inception":
        return load_feature_extractor(inception=path, device=device)
    if kind == "clip":
        return load_feature_extractor(clip=path, device=device)
    from evaluation.scene_features import SceneFeatures

    return SceneFeatures(path)
