"""Fill queues: pick pairs from an embeddings dataset (selection.py) and record how they were picked.

    queue_random(store, dataset, "people", 1000, seed=0)
    queue_search(store, dataset, "violence", "a knife", 50, encode_text)        # text -> (D,) unit vector
    queue_active(store, dataset, "violence", "FILTERS", 100)                     # nearest the SVM's boundary

Pairs already labelled for the filter, or in one of its queues, are never picked again. Each returns
the new queue, or None when no pair is left to pick (nothing is created then).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional, TextIO

import numpy as np

import shards as sh
from filtering.labels import selection
from filtering.labels.queues import QueueInfo, QueueItem
from filtering.labels.store import LabelStore

BOUNDARIES = ("svm", "threshold")  # the SVM's own boundary (score 0), or the tuned removal threshold


def _progress(what: str, dataset: str, stream: Optional[TextIO]) -> sh.Progress:
    return sh.Progress(f"label {what}", sh.dataset_rows(dataset), stream=stream or sys.stderr)


def _where(path: str) -> str:
    """A local path made absolute (the labelling page finds the dataset from any folder); a URI as given."""
    return path if "://" in path else os.path.abspath(path)


def _queue(store: LabelStore, filter_name: str, kind: str, picks: list[selection.Pick], *, dataset: str,
           **fields) -> Optional[QueueInfo]:
    if not picks:
        return None
    fields["dataset"] = _where(dataset)
    value_field = {"search": "similarity", "active": "margin"}.get(kind)
    items = [QueueItem(uid=p.uid, **({value_field: p.value} if value_field else {})) for p in picks]
    return store.create_queue(filter_name=filter_name, kind=kind, items=items, **fields)


def queue_random(store: LabelStore, dataset: str, filter_name: str, n: int, *, seed: Optional[int] = None,
                 name: Optional[str] = None, labels_per_item: int = 1,
                 stream: Optional[TextIO] = None) -> Optional[QueueInfo]:
    """n pairs drawn uniformly from those not yet labelled or queued for the filter."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))  # recorded, so the draw can be repeated
    selection.require_shards(dataset)  # before the progress line starts
    exclude = store.seen_uids(filter_name)
    with _progress("sample", dataset, stream) as progress:
        picks = selection.random_pairs(dataset, n, exclude, seed=seed, progress=progress.update)
    return _queue(store, filter_name, "random", picks, name=name, dataset=dataset, labels_per_item=labels_per_item,
                  params={"seed": seed, "excluded": len(exclude)})


def queue_search(store: LabelStore, dataset: str, filter_name: str, query: str, n: int,
                 encode_text: Callable[[list[str]], np.ndarray], *, model: Optional[dict] = None,
                 name: Optional[str] = None, labels_per_item: int = 1,
                 stream: Optional[TextIO] = None) -> Optional[QueueInfo]:
    """The n unlabelled pairs most similar to the text `query` (CLIP text features, batched dot products)."""
    if not query.strip():
        raise sh.UserError("--query: empty search text")
    vector = np.asarray(encode_text([query]), dtype=np.float32).reshape(-1)
    selection.check_dim(dataset, len(vector), "the CLIP's text feature")
    exclude = store.seen_uids(filter_name)
    with _progress("search", dataset, stream) as progress:
        picks = selection.nearest_to_text(dataset, vector, n, exclude, progress=progress.update)
    return _queue(store, filter_name, "search", picks, name=name, query=query, dataset=dataset,
                  labels_per_item=labels_per_item, params={"model": model, "excluded": len(exclude)})


def queue_active(store: LabelStore, dataset: str, filter_name: str, filters_folder: str, n: int, *,
                 boundary: str = "svm", device: str = "cpu", memory_mb: int = 256, name: Optional[str] = None,
                 labels_per_item: int = 1, stream: Optional[TextIO] = None) -> Optional[QueueInfo]:
    """The n unlabelled pairs nearest the filter's boundary, with its version (FILTERS digest) and margins."""
    from filtering.embedding_data import embedding_model
    from filtering.filter_files import filters_digest, load_filters
    from filtering.svm_filter import FilterScorer

    if boundary not in BOUNDARIES:
        raise sh.UserError(f"--boundary: {boundary!r} is not one of {', '.join(BOUNDARIES)}")
    filter_set = load_filters(filters_folder)
    chosen = [f for f in filter_set.filters if f.name == filter_name]
    if not chosen:
        raise sh.UserError(f"{filters_folder}: has no filter {filter_name!r} (it has {', '.join(filter_set.names)})")
    svm = chosen[0]
    selection.check_dim(dataset, svm.dim, f"filter {filter_name!r} in {filters_folder}")
    model = embedding_model(dataset)
    if "unknown" not in (model, svm.embedding_model) and model != svm.embedding_model:
        raise sh.UserError(f"{filters_folder}: filter {filter_name!r} was fitted on {svm.embedding_model!r} "
                           f"embeddings, but {dataset} holds {model!r} embeddings")
    scorer = FilterScorer([svm], device=device, memory_mb=memory_mb)
    at = 0.0 if boundary == "svm" else svm.threshold
    exclude = store.seen_uids(filter_name)
    with _progress("next", dataset, stream) as progress:
        picks = selection.nearest_to_boundary(dataset, lambda m: scorer.scores(m)[:, 0], n, exclude, at=at,
                                              progress=progress.update)
    return _queue(store, filter_name, "active", picks, name=name, dataset=dataset,
                  filter_version=filters_digest(filters_folder), labels_per_item=labels_per_item,
                  params={"filters": _where(filters_folder), "boundary": boundary, "at": at, "threshold": svm.threshold,
                          "excluded": len(exclude)})


def text_encoder(dataset: str, clip: Optional[str], device: str = "cpu"):
    """(encode_text, description) of the CLIP that embedded `dataset` (or `clip`, checked to be it):
    encode_text maps a list of texts to (n, D) unit vectors comparable with the stored embeddings."""
    from filtering.clip_features import load_clip_features

    spec = clip_for_dataset(dataset, clip)
    features = load_clip_features(spec, device)
    check_same_clip(dataset, features.describe(), spec)
    return (lambda texts: features.encode_text(texts).numpy()), features.describe()


def check_same_clip(dataset: str, described: dict, clip: str) -> None:
    """UserError unless `described` (ClipSource.describe()) has the weights that embedded `dataset`:
    text features of another CLIP live in another space, and its nearest pairs mean nothing."""
    recorded = (sh.read_manifest(dataset).get("config") or {}).get("clip_model")
    want = recorded.get("weights_sha256") if isinstance(recorded, dict) else None
    have = described.get("weights_sha256")
    if want and have and want != have:
        raise sh.UserError(f"--clip {clip}: not the CLIP that embedded {dataset} (weights sha256 "
                           f"{have[:16]}, the embeddings' {want[:16]})")


def clip_for_dataset(dataset: str, clip: Optional[str]) -> str:
    """The CLIP to search `dataset` with: `clip` if given, else the one its embed manifest recorded."""
    if clip:
        return clip
    config = (sh.read_manifest(dataset).get("config") or {})
    described = config.get("clip_model")
    if isinstance(described, dict):
        spec = described.get("exact_spec") or described.get("spec")
        if isinstance(spec, str) and spec:
            return spec
    if isinstance(config.get("clip"), str) and config["clip"]:
        return config["clip"]
    raise sh.UserError(f"{dataset}: its manifest names no CLIP model; give --clip MODEL (the one that embedded it)")
