"""Read the `clip_embedding` column of an embeddings dataset (the embed stage's output) as numpy."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa

import shards as sh

COLUMN = "clip_embedding"
# Keys of a manifest config that may name the model as text, when there is no `clip_model` record.
MODEL_KEYS = ("clip", "model", "architecture")


def embedding_dim(dataset: str) -> int:
    """D of the dataset's fixed_size_list<float16, D> column; UserError if it has none."""
    paths = sh.list_shards(dataset)
    if not paths:
        raise sh.UserError(f"{dataset}: no shards (is it a dataset folder?)")
    schema = sh.read_schema(paths[0])
    index = schema.get_field_index(COLUMN)
    if index < 0:
        raise sh.UserError(f"{dataset}: no '{COLUMN}' column; run `glide embed {dataset} -o DATASET_EMB` first")
    field_type = schema.field(index).type
    if not pa.types.is_fixed_size_list(field_type):
        raise sh.UserError(f"{paths[0]}: column '{COLUMN}' is {field_type}, not a fixed-size list")
    return int(field_type.list_size)


def embedding_model(dataset: str) -> str:
    """The model the embed stage recorded in its manifest ("unknown" if it names none).

    The embed stage records `clip_model` (arch, family, the weights' sha256): the weights' digest
    names the model wherever its file lives, so filters fitted on one machine check anywhere.
    """
    manifest = sh.read_manifest(dataset)  # UserError when the stage has not finished
    config = manifest.get("config") or {}
    described = config.get("clip_model")
    if isinstance(described, dict):
        name = described.get("arch") or described.get("family") or described.get("spec") or "clip"
        digest = described.get("weights_sha256")
        return f"{name} (weights sha256 {digest[:16]})" if isinstance(digest, str) and digest else str(name)
    for key in MODEL_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    return "unknown"


def to_matrix(column, where: str) -> np.ndarray:
    """A fixed_size_list<float, D> Arrow column -> (n, D) numpy array (no copy of the values when possible)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise sh.UserError(f"{where}: {column.null_count} row(s) have no {COLUMN}")
    dim = column.type.list_size
    values = column.flatten()  # respects the array's offset (a sliced batch)
    return values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def iter_embedding_batches(dataset: str, columns: Iterable[str] = ()) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """(record batch projected to uid, `columns` and the embedding, its (n, D) matrix), shard by shard."""
    wanted = list(dict.fromkeys(["uid", *columns, COLUMN]))
    for path in sh.list_shards(dataset):
        for batch in sh.iter_shard_batches(path, wanted):
            yield batch, to_matrix(batch.column(COLUMN), path)


def lookup_embeddings(dataset: str, uids: Iterable[str],
                      report: Optional[Callable[[int], None]] = None) -> dict[str, np.ndarray]:
    """{uid: embedding (D,)} for the `uids` found in the dataset (streamed; others are absent).
    `report(n)`: n more rows read."""
    wanted = set(uids)
    found: dict[str, np.ndarray] = {}
    for batch, matrix in iter_embedding_batches(dataset):
        for i, uid in enumerate(batch.column("uid").to_pylist()):
            if uid in wanted and uid not in found:
                found[uid] = matrix[i].copy()
        if report is not None:
            report(batch.num_rows)
    return found
