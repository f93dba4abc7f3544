"""Pick pairs to label from an embeddings dataset, streamed shard by shard (never all in memory).

    random_pairs(dataset, n, exclude, seed)               a uniform sample of the pairs not excluded
    nearest_to_text(dataset, query, n, exclude)           largest cosine similarity to a query vector (D,)
    nearest_to_boundary(dataset, score, n, exclude, at)   smallest |score(x) - at|: active learning

Each keeps the best n seen so far (`BestN`): memory is n plus one record batch, whatever the
dataset's size. `exclude` (pairs labelled or queued already) is tested per batch with Arrow's
vectorised is_in. `score` maps an (rows, D) float16 matrix to (rows,) decision values; the CLI passes
the filters' torch kernel (filtering.svm_filter), tests may pass any function.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Collection, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import shards as sh
from filtering.embedding_data import COLUMN, embedding_dim, to_matrix


@dataclass(frozen=True)
class Pick:
    uid: str
    value: Optional[float] = None  # similarity (text search) or signed margin (boundary); None: random


class BestN:
    """The n rows with the smallest keys offered so far, one row per uid; equal keys are ordered by
    uid, so the result does not depend on the order rows are offered in."""

    def __init__(self, n: int):
        self.n = n
        self.keys = np.empty(0)
        self.values = np.empty(0)
        self.uids: list[str] = []

    def offer(self, keys: np.ndarray, values: np.ndarray, uid_column: pa.Array) -> None:
        if self.n <= 0 or len(keys) == 0:
            return
        candidates = np.arange(len(keys))
        if len(self.keys) >= self.n:  # only rows that beat or tie the current n-th can enter
            candidates = candidates[keys <= self.keys.max()]
            if len(candidates) == 0:
                return
        kept = set(self.uids)
        fresh, fresh_uids = [], []
        for i, uid in zip(candidates, uid_column.take(pa.array(candidates)).to_pylist()):
            if uid not in kept:  # a pair that appears twice in the dataset is queued once
                kept.add(uid)
                fresh.append(i)
                fresh_uids.append(uid)
        if not fresh:
            return
        keys = np.concatenate([self.keys, keys[fresh]])
        values = np.concatenate([self.values, values[fresh]])
        uids = self.uids + fresh_uids
        if len(keys) > self.n:
            order = _key_then_uid(keys, uids)[:self.n]
            keys, values, uids = keys[order], values[order], [uids[i] for i in order]
        self.keys, self.values, self.uids = keys, values, uids

    def picks(self, with_values: bool = True) -> list[Pick]:
        order = _key_then_uid(self.keys, self.uids)
        return [Pick(self.uids[i], float(self.values[i]) if with_values else None) for i in order]


def _key_then_uid(keys: np.ndarray, uids: list[str]) -> np.ndarray:
    return np.lexsort((np.asarray(uids, dtype=object).astype(str), keys))


def _offer_open(best: BestN, keys: np.ndarray, values: np.ndarray, uids: pa.Array,
                exclude: Optional[pa.Array]) -> None:
    """Offer the rows that have a uid, are not excluded and have a finite key (a NaN score is no pick)."""
    mask = pc.and_(pc.is_valid(uids), pa.array(np.isfinite(keys)))
    if exclude is not None:
        mask = pc.and_(mask, pc.invert(pc.is_in(uids, value_set=exclude)))
    rows = mask.to_numpy(zero_copy_only=False)
    best.offer(keys[rows], values[rows], uids.filter(mask))


def _exclusion(exclude: Collection[str]) -> Optional[pa.Array]:
    return pa.array(sorted(exclude), pa.string()) if exclude else None


def require_shards(dataset: str) -> list[str]:
    paths = sh.list_shards(dataset)
    if not paths:
        raise sh.UserError(f"{dataset}: no shards (is it a dataset folder?)")
    return paths


def _batches(dataset: str, with_embeddings: bool) -> Iterator[tuple[str, pa.RecordBatch]]:
    columns = ["uid", COLUMN] if with_embeddings else ["uid"]
    for path in require_shards(dataset):
        for batch in sh.iter_shard_batches(path, columns):
            yield path, batch


def uid_keys(seed: int, uids: Sequence[Optional[str]]) -> np.ndarray:
    """A uniform key in [0, 1) per uid, a hash of (seed, uid): the same pair gets the same key however
    the dataset's rows are ordered or sharded (a crawl made on another cluster draws the same sample)."""
    def key(uid: Optional[str]) -> float:
        digest = hashlib.blake2b(f"{seed}\0{uid}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0 ** 64
    return np.fromiter((key(u) for u in uids), dtype=np.float64, count=len(uids))


def random_pairs(dataset: str, n: int, exclude: Collection[str] = (), seed: Optional[int] = None,
                 progress: Optional[Callable[[int], None]] = None) -> list[Pick]:
    """n pairs drawn uniformly without replacement (the n smallest of a random key per uid)."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    best, excluded = BestN(n), _exclusion(exclude)
    for _, batch in _batches(dataset, with_embeddings=False):
        uids = batch.column("uid")
        keys = uid_keys(seed, uids.to_pylist())
        _offer_open(best, keys, keys, uids, excluded)
        if progress:
            progress(batch.num_rows)
    return best.picks(with_values=False)


def _scored(dataset: str, n: int, exclude: Collection[str], key_and_value, progress) -> list[Pick]:
    best, excluded = BestN(n), _exclusion(exclude)
    for path, batch in _batches(dataset, with_embeddings=True):
        uids = batch.column("uid")
        keys, values = key_and_value(to_matrix(batch.column(COLUMN), path))
        _offer_open(best, np.asarray(keys, dtype=np.float64), np.asarray(values, dtype=np.float64), uids, excluded)
        if progress:
            progress(batch.num_rows)
    return best.picks()


def check_dim(dataset: str, dim: int, what: str) -> None:
    have = embedding_dim(dataset)
    if have != dim:
        raise sh.UserError(f"{dataset}: embeddings have {have} values, but {what} has {dim}: "
                           f"not the CLIP that embedded this dataset")


def nearest_to_text(dataset: str, query: np.ndarray, n: int, exclude: Collection[str] = (),
                    progress: Optional[Callable[[int], None]] = None) -> list[Pick]:
    """The n pairs whose embedding has the largest dot product with `query` (unit vectors: cosine)."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)

    def key_and_value(matrix):
        similarity = matrix.astype(np.float32) @ q  # one batch at a time: (rows, D) @ (D,)
        return -similarity, similarity

    return _scored(dataset, n, exclude, key_and_value, progress)


def nearest_to_boundary(dataset: str, score: Callable[[np.ndarray], np.ndarray], n: int,
                        exclude: Collection[str] = (), at: float = 0.0,
                        progress: Optional[Callable[[int], None]] = None) -> list[Pick]:
    """The n pairs whose score lies closest to `at`; each Pick's value is the signed margin score - at."""

    def key_and_value(matrix):
        margin = np.asarray(score(matrix), dtype=np.float64).reshape(-1) - at
        return np.abs(margin), margin

    return _scored(dataset, n, exclude, key_and_value, progress)
