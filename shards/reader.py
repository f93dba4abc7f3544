"""Read shards: list a dataset's files, stream record batches with column projection, count rows.

Streaming: one shard file is open at a time and record batches are yielded as read, so a
reader never holds more than one batch of a dataset of any size.
"""
from __future__ import annotations

import posixpath
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.ipc as ipc

from shards.digests import file_digest
from shards.errors import UserError
from shards.files import join, url_to_fs
from shards.manifest import read_manifest
from shards.schema import REJECTS_DIR, SHARDS_DIR


def list_shards(dataset: str, kind: str = SHARDS_DIR) -> list[str]:
    """Paths of a dataset's shards (`kind`: "shards", "rejects" or another folder), in order.

    Taken from the manifest when there is one (the finished set), else from the folder.
    """
    manifest = read_manifest(dataset, missing_ok=True)
    if manifest is not None and kind in (SHARDS_DIR, REJECTS_DIR) and kind in manifest:
        return [join(dataset, kind, s["name"]) for s in manifest[kind]]
    fs, p = url_to_fs(join(dataset, kind))
    if not fs.exists(p):
        return []
    names = sorted(posixpath.basename(x) for x in fs.ls(p, detail=False))
    return [join(dataset, kind, n) for n in names if n.startswith("part-") and n.endswith(".arrow")]


def _check_columns(path: str, schema: pa.Schema, columns: Optional[Sequence[str]]) -> None:
    missing = [c for c in columns or () if c not in schema.names]
    if missing:
        raise UserError(f"{path}: shard has no column {missing[0]!r}")


def iter_shard_batches(path: str, columns: Optional[Sequence[str]] = None) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard file, projected to `columns` (UserError naming the file if absent)."""
    fs, p = url_to_fs(path)
    try:
        f = fs.open(p, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: shard not found") from None
    with f:
        try:
            reader = ipc.open_file(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path}: not an Arrow shard ({e})") from None
        _check_columns(path, reader.schema, columns)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            yield batch.select(list(columns)) if columns else batch


def iter_record_batches(dataset: str, columns: Optional[Sequence[str]] = None,
                        kind: str = SHARDS_DIR) -> Iterator[pa.RecordBatch]:
    """Stream a dataset's record batches shard by shard (one shard's file open at a time)."""
    for path in list_shards(dataset, kind):
        yield from iter_shard_batches(path, columns)


def read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Read one Arrow IPC shard whole; UserError naming the file if it is not one."""
    fs, p = url_to_fs(path)
    try:
        with fs.open(p, "rb") as f:
            reader = ipc.open_file(pa.BufferReader(f.read()))
            schema = reader.schema
            table = reader.read_all()
    except FileNotFoundError:
        raise UserError(f"{path}: shard not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: not an Arrow shard ({e})") from None
    _check_columns(path, schema, columns)
    return table.select(list(columns)) if columns else table


def read_schema(path: str) -> pa.Schema:
    fs, p = url_to_fs(path)
    try:
        with fs.open(p, "rb") as f:
            return ipc.open_file(f).schema
    except FileNotFoundError:
        raise UserError(f"{path}: shard not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: not an Arrow shard ({e})") from None


def count_rows(path: str) -> int:
    """Rows of one shard from its record batches' metadata (no column is decoded)."""
    fs, p = url_to_fs(path)
    try:
        with fs.open(p, "rb") as f:
            return ipc.open_file(f).count_rows()
    except FileNotFoundError:
        raise UserError(f"{path}: shard not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: not an Arrow shard ({e})") from None


def dataset_rows(dataset: str, kind: str = SHARDS_DIR) -> int:
    """Rows of a dataset: the manifest's per-shard counts when finished, else each shard's metadata."""
    manifest = read_manifest(dataset, missing_ok=True)
    entries = (manifest or {}).get(kind) or []
    if entries and all("rows" in s for s in entries):
        return sum(int(s["rows"]) for s in entries)
    return sum(count_rows(p) for p in list_shards(dataset, kind))


def verify_shard(path: str, expected: Optional[dict] = None) -> bool:
    """True if `path` exists, is a readable Arrow IPC file and matches `expected`.

    `expected` may hold "rows", "bytes" and "sha256" (as in a manifest entry); keys
    not given are not checked. Never raises for a missing or damaged file.
    """
    fs, p = url_to_fs(path)
    try:
        if not fs.exists(p):
            return False
        expected = expected or {}
        if "sha256" in expected or "bytes" in expected:
            digest = file_digest(path)
            if "sha256" in expected and digest.sha256 != expected["sha256"]:
                return False
            if "bytes" in expected and digest.bytes != expected["bytes"]:
                return False
        with fs.open(p, "rb") as f:
            rows = ipc.open_file(f).count_rows()
        return "rows" not in expected or rows == expected["rows"]
    except Exception:
        return False
