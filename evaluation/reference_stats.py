"""Reference statistics, computed once from a reference image folder and cached.

    ref = reference_statistics("coco-val/", extractor, image_size=256, cache_dir="cache/")
    ref.mu, ref.sigma        # float64 [D], [D, D]: the Gaussian FID compares against
    ref.features             # float32 [N, D]: the reference features precision/recall needs
    ref.description          # what they were computed with (network, weights sha256, preprocessing, images)

The cache is one .npz per key, `cache_dir/reference-<key>.npz`; the key is the sha256 of the
description: the feature network's describe() (its weights' sha256 and its own resizing), the
preprocessing (center crop to image_size, evaluation.image_folder) and the image listing (relative
paths, sizes, modification times). A changed network, weights file, crop size or image folder gives a
new key, so stale statistics are never reused; a cache file whose stored description differs from its
name's (a collision or a hand-edited file) is recomputed too. Files are written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import shards as sh
from evaluation.features import FeatureExtractor, ImageFeatures
from evaluation.frechet import gaussian_statistics
from evaluation.image_folder import iter_image_batches, list_images

PREPROCESSING_VERSION = 1  # bump when evaluation.image_folder.center_crop changes


@dataclass
class ReferenceStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    features: Optional[np.ndarray]   # [N, D] pool features (None when not kept)
    count: int
    key: str
    description: dict
    cache_file: Optional[Path] = None
    from_cache: bool = False


def preprocessing(image_size: int) -> dict:
    return {"center_crop": image_size, "resize": "box halving, then bicubic (guided-diffusion center_crop_arr)",
            "version": PREPROCESSING_VERSION}


def describe_reference(folder: str | Path, extractor: FeatureExtractor, image_size: int) -> tuple[dict, list[Path]]:
    """(description, image paths): everything the statistics depend on."""
    root = Path(folder).expanduser().resolve()
    paths = list_images(root)
    listing = hashlib.sha256()
    for p in paths:
        st = p.stat()
        listing.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    description = {"features": extractor.describe(), "features_digest": extractor.digest(),
                   "preprocessing": preprocessing(image_size),
                   "images": {"folder": str(root), "count": len(paths), "listing_sha256": listing.hexdigest()}}
    return description, paths


def description_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def reference_statistics(folder: str | Path, extractor: FeatureExtractor, image_size: int,
                         cache_dir: str | Path, *, keep_features: bool = True) -> ReferenceStatistics:
    """The reference set's feature statistics, from the cache when it holds them for exactly this
    network, preprocessing and folder (see the module doc), else computed and cached."""
    description, paths = describe_reference(folder, extractor, image_size)
    key = description_key(description)
    cache = Path(cache_dir).expanduser() / f"reference-{key[:32]}.npz"
    cached = _read_cache(cache, key, keep_features)
    if cached is not None:
        return cached
    parts = [extractor.extract(batch) for batch in iter_image_batches(paths, image_size, extractor.batch_size)]
    features = ImageFeatures.concatenate(parts, extractor.dim).pool
    if features.shape[0] < 2:
        raise sh.UserError(f"{folder}: {features.shape[0]} image; reference statistics need at least 2")
    mu, sigma = gaussian_statistics(features)
    _write_cache(cache, key, description, mu, sigma, features if keep_features else None)
    return ReferenceStatistics(mu, sigma, features if keep_features else None, len(paths), key, description, cache)


def _read_cache(path: Path, key: str, keep_features: bool) -> Optional[ReferenceStatistics]:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            description = json.loads(str(data["description"]))
            if str(data["key"]) != key or description_key(description) != key:
                return None
            if keep_features and "features" not in data.files:
                return None
            features = data["features"] if keep_features else None
            return ReferenceStatistics(data["mu"], data["sigma"], features, int(data["count"]), key, description,
                                       path, from_cache=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError):  # unreadable: compute it again
        return None


def _write_cache(path: Path, key: str, description: dict, mu, sigma, features) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": mu, "sigma": sigma, "count": np.int64(description["images"]["count"]),
              "key": np.str_(key), "description": np.str_(json.dumps(description, sort_keys=True))}
    if features is not None:
        arrays["features"] = features
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
