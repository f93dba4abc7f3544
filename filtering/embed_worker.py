"""The embed stage's per-shard work: one input pairs shard -> the same pairs with `clip_embedding`, and
a rejects shard for the images that do not decode.

    worker = EmbedWorker(cfg, device)          # loads the CLIP once (one per Ray actor)
    outcome = worker.embed_shard(input_path, pairs_path, rejects_path, report)

Images are decoded and cropped on the CPU by `decode_threads` threads (Pillow releases the GIL while
decoding and resizing), at most two batches ahead of the model, which runs on batches of
`batch_size` pairs. Every other column is carried over as it is; the embedding (float16, unit L2
norm) is appended with shards.extend_schema. An image that does not decode is a `decode_error`
reject carrying the error, never a crash. Both files are written atomically (shards.ShardWriter).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

import shards as sh
from filtering.clip_features import ClipFeatures, load_clip_features

STAGE = "embed"
DECODE_ERROR = "decode_error"
EMBEDDING_COLUMN = "clip_embedding"
REQUIRED_COLUMNS = ("uid", "url", "caption", "image")
_AHEAD = 2  # batches decoded ahead of the model: keeps it fed, bounds memory


@dataclass(frozen=True)
class EmbedShardOutcome:
    """Counts and the two files of one shard (`shard` / `rejects`: {"rows", "bytes", "sha256"})."""

    input: int
    kept: int
    rejected: dict
    shard: dict
    rejects: dict


class EmbedWorker:
    """Holds one CLIP; embeds shard after shard. `cfg`: the resolved `embed` config as a dict
    (clip, batch_size, cpus_per_worker); `device`: "cuda" or "cpu"."""

    def __init__(self, cfg: dict, device: str = "cpu", features: Optional[ClipFeatures] = None):
        import torch

        cpus = max(1, int(cfg.get("cpus_per_worker") or 1))
        if device == "cpu":
            torch.set_num_threads(cpus)  # the CPUs Ray reserved for this actor, no more
        self.decode_threads = cpus
        self.features = features or load_clip_features(cfg["clip"], device, batch_size=cfg["batch_size"])

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        return sh.extend_schema(input_schema, sh.clip_embedding_field(self.features.dim))

    def embed_shard(self, input_path: str, pairs_path: str, rejects_path: str,
                    report: Callable[[int], None] = lambda n: None) -> EmbedShardOutcome:
        schema = sh.read_schema(input_path)
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise sh.UserError(f"{input_path}: shard has no column {missing[0]!r}")
        out_schema = self.output_schema(schema)
        pairs = sh.ShardWriter(pairs_path, out_schema)
        try:
            rejects = sh.ShardWriter(rejects_path, sh.REJECTS_SCHEMA)
        except BaseException:
            pairs.abort()
            raise
        counts = {"input": 0, "kept": 0, "rejected": 0}
        try:
            with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="embed-decode") as pool:
                pending: deque = deque()
                for chunk in _chunks(sh.iter_shard_batches(input_path), self.features.batch_size):
                    images = chunk.column("image").to_pylist()
                    pending.append((chunk, [pool.submit(self._decode, data) for data in images]))
                    if len(pending) > _AHEAD:
                        self._write(*pending.popleft(), out_schema, pairs, rejects, counts, report)
                while pending:
                    self._write(*pending.popleft(), out_schema, pairs, rejects, counts, report)
            shard_info, rejects_info = pairs.close(), rejects.close()
        except BaseException:
            pairs.abort()
            rejects.abort()
            raise
        rejected = {DECODE_ERROR: counts["rejected"]} if counts["rejected"] else {}
        return EmbedShardOutcome(input=counts["input"], kept=counts["kept"], rejected=rejected,
                                 shard=shard_info, rejects=rejects_info)

    def _decode(self, data: Optional[bytes]):
        """(crops, None) or (None, why): a bad image is data, not a failure of the shard."""
        if data is None:
            return None, "no image bytes"
        try:
            return self.features.crops_of(data), None
        except Exception as e:  # any decoder error (truncated, not an image, bomb) rejects this row
            return None, decode_error_detail(e)

    def _write(self, chunk: pa.RecordBatch, futures: list[Future], out_schema: pa.Schema,
               pairs: sh.ShardWriter, rejects: sh.ShardWriter, counts: dict, report) -> None:
        decoded = [f.result() for f in futures]
        ok = [i for i, (crops, _) in enumerate(decoded) if crops is not None]
        if ok:
            embeddings = self.features.encode_crops(np.stack([decoded[i][0] for i in ok]))
            pairs.write(with_embeddings(chunk.take(pa.array(ok, pa.int32())), embeddings, out_schema))
        bad = [i for i, (crops, _) in enumerate(decoded) if crops is None]
        if bad:
            rejects.write(pa.Table.from_pylist([
                {"uid": chunk.column("uid")[i].as_py(), "url": chunk.column("url")[i].as_py(),
                 "caption": chunk.column("caption")[i].as_py(), "stage": STAGE, "reason": DECODE_ERROR,
                 "detail": decoded[i][1], "score": None} for i in bad], schema=sh.REJECTS_SCHEMA))
        counts["input"] += chunk.num_rows
        counts["kept"] += len(ok)
        counts["rejected"] += len(bad)
        report(chunk.num_rows)


def with_embeddings(batch: pa.RecordBatch, embeddings, out_schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with the float16 embeddings [N, D] as the `clip_embedding` column (appended, or
    replacing an existing one in place), every other column as it is."""
    dim = embeddings.shape[1]
    flat = pa.array(embeddings.numpy().astype(np.float16).reshape(-1), type=pa.float16())
    column = pa.FixedSizeListArray.from_arrays(flat, dim)
    arrays = [column if name == EMBEDDING_COLUMN else batch.column(name) for name in out_schema.names]
    return pa.RecordBatch.from_arrays(arrays, schema=out_schema)


def decode_error_detail(e: BaseException) -> str:
    """One line for a reject's detail (Pillow's 'cannot identify' message names a memory address)."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "UnidentifiedImageError: not an image format Pillow can decode"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _chunks(batches, size: int):
    """Record batches re-cut into batches of `size` rows (the last may be shorter)."""
    held: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(size - n, batch.num_rows - offset)
            held.append(batch.slice(offset, take))
            n += take
            offset += take
            if n == size:
                yield _concat(held)
                held, n = [], 0
    if n:
        yield _concat(held)


def _concat(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]
