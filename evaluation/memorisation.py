"""The memorisation check (GLIDE Section 6): each sample's nearest training image in CLIP space.

    found = nearest_training_images(sample_embeddings, "runs/embedded")   # the embed stage's dataset
    found.distance      # [N] cosine distance 1 - cos(sample, nearest training image)
    found.uid           # [N] its uid; found.shard, found.row: where it is stored
    images = training_images(found, [0, 5])                            # those training images' bytes

The training set's embeddings are the embed stage's `clip_embedding` column (unit-norm, three crops
mean-pooled: filtering.clip_features), read shard by shard in record batches (shards reader), so memory
holds one batch of embeddings and N running minima, never the whole set. The samples must be embedded
the same way by the same CLIP (`embed_samples`); the dataset's manifest names that CLIP.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

import shards as sh

EMBEDDING = "clip_embedding"


@dataclass
class NearestTraining:
    distance: np.ndarray   # float64 [N]
    uid: list[str]
    caption: list[str]
    shard: list[str]
    row: np.ndarray        # int64 [N]: the row within its shard
    searched: int          # training rows compared against


def training_clip(dataset: str) -> str:
    """The exact CLIP spec the embed stage recorded for `dataset` (its manifest)."""
    manifest = sh.read_manifest(dataset)
    clip = (manifest.get("config") or {}).get("clip_model") or {}
    if "exact_spec" not in clip:
        raise sh.UserError(f"{dataset}: its manifest names no CLIP (not an embed-stage dataset?); "
                           f"run `glide embed` on the training set first")
    return clip["exact_spec"]


def embed_samples(clip, images: np.ndarray) -> np.ndarray:
    """float32 [N, D] unit-norm embeddings of uint8 images, as the embed stage embeds training images
    (clip: filtering.clip_features.ClipFeatures)."""
    from PIL import Image

    return clip.encode_images([Image.fromarray(im) for im in images]).numpy().astype(np.float32)


def nearest_training_images(samples: np.ndarray, dataset: str) -> NearestTraining:
    """For each row of `samples` ([N, D], unit norm), the training row of largest cosine similarity."""
    samples = np.asarray(samples, dtype=np.float32)
    n = samples.shape[0]
    best = np.full(n, -np.inf)
    uid, caption, shard = [""] * n, [""] * n, [""] * n
    row = np.full(n, -1, np.int64)
    searched = 0
    shards = sh.list_shards(dataset)
    if not shards:
        raise sh.UserError(f"{dataset}: no shards")
    for path in shards:
        offset = 0
        for batch in sh.iter_shard_batches(path, [EMBEDDING, "uid", "caption"]):
            column = batch.column(EMBEDDING)
            width = column.type.list_size
            if width != samples.shape[1]:
                raise sh.UserError(f"{path}: {EMBEDDING} has {width} dimensions, the samples' CLIP {samples.shape[1]}")
            train = np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)
            similarity = samples @ train.T                      # [N, batch]
            top = similarity.argmax(axis=1)
            value = similarity[np.arange(n), top]
            better = np.nonzero(value > best)[0]
            if len(better):
                uids, captions = batch.column("uid").to_pylist(), batch.column("caption").to_pylist()
                for i in better:
                    best[i] = value[i]
                    uid[i], caption[i], shard[i] = uids[top[i]], captions[top[i]], path
                    row[i] = offset + top[i]
            offset += len(train)
            searched += len(train)
    if searched == 0:
        raise sh.UserError(f"{dataset}: no training rows to compare with")
    return NearestTraining(1.0 - best, uid, caption, shard, row, searched)


def training_images(found: NearestTraining, which: Sequence[int]) -> dict[int, bytes]:
    """{sample index: encoded image bytes of its nearest training image}, reading only their shards."""
    out = {}
    by_shard: dict[str, list[int]] = {}
    for i in which:
        by_shard.setdefault(found.shard[i], []).append(i)
    for path, samples in by_shard.items():
        offset = 0
        for batch in sh.iter_shard_batches(path, ["image"]):
            for i in samples:
                r = int(found.row[i]) - offset
                if 0 <= r < batch.num_rows:
                    out[i] = batch.column("image")[r].as_py()
            offset += batch.num_rows
    return out


def thumbnail_png(data: bytes, size: int) -> bytes:
    """A training image as a size x size PNG for the report (center-cropped like the samples)."""
    from PIL import Image

    from evaluation.image_folder import center_crop

    with Image.open(io.BytesIO(data)) as im:
        pixels = center_crop(im, size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
