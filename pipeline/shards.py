"""Shard I/O: the on-disk contract every stage reads and writes (see ARCHITECTURE "Shards").

A dataset is a folder, local or an fsspec URI:
    DATASET/manifest.json          written last; its presence means the stage finished
    DATASET/shards/part-00000.arrow  Arrow IPC file format, pairs schema (v1)
    DATASET/rejects/part-00000.arrow every dropped pair with its reason

Leaf module: stdlib + pyarrow + fsspec only, so `training`, `filtering` and
`evaluation` can import it without pulling in the rest of `pipeline`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import posixpath
import uuid
from typing import Iterable, Iterator, Optional

import fsspec
import pyarrow as pa
import pyarrow.ipc as ipc

from pipeline.errors import UserError

FORMAT = "glide-shards"
VERSION = 1
MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
REJECTS_DIR = "rejects"

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("image_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("source", pa.string()),
    ],
    metadata={b"glide.schema": b"pairs", b"glide.version": b"1"},
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("score", pa.float32(), nullable=True),
    ],
    metadata={b"glide.schema": b"rejects", b"glide.version": b"1"},
)


def compute_uid(url: str, caption: Optional[str]) -> str:
    """32 hex chars: the first 128 bits of sha256(url + "\\n" + caption); stable across stages."""
    text = f"{url}\n{caption or ''}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def shard_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def join(base: str, *parts: str) -> str:
    """Join path parts for a local path or an fsspec URI (always '/')."""
    return posixpath.join(str(base).rstrip("/"), *parts) if parts else str(base)


def _fs(path: str):
    return fsspec.core.url_to_fs(str(path))


# --------------------------------------------------------------------------- files


def write_table(path: str, table: pa.Table) -> dict:
    """Write `table` as one Arrow IPC file atomically (temp name, then rename).

    Works for local paths and fsspec URIs. Returns {"rows", "bytes", "sha256"} of the file.
    """
    fs, p = _fs(path)
    parent = posixpath.dirname(p)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(p)}.{uuid.uuid4().hex[:8]}.tmp")
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, p)
    except BaseException:
        try:
            fs.rm(tmp)
        except Exception:  # already gone or never written
            pass
        raise
    return {"rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class ShardWriter:
    """Stream record batches into one Arrow IPC file, renamed into place by `close()`.

    For shards too big to hold as one table: `write(batch)` as rows arrive.
    `abort()` (or an exception inside `with`) removes the temporary file.
    """

    def __init__(self, path: str, schema: pa.Schema):
        self.fs, self.path = _fs(path)
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.tmp = posixpath.join(parent, f".{posixpath.basename(self.path)}.{uuid.uuid4().hex[:8]}.tmp")
        self._file = self.fs.open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self._bytes = 0
        self.rows = 0
        self.schema = schema
        self._writer = ipc.new_file(_HashingSink(self), schema)

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if isinstance(batch, pa.Table):
            self._writer.write_table(batch)
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _raw_write(self, data) -> None:
        view = memoryview(data)
        self._hash.update(view)
        self._bytes += view.nbytes
        self._file.write(view)

    def close(self) -> dict:
        self._writer.close()
        self._file.close()
        self.fs.mv(self.tmp, self.path)
        return {"rows": self.rows, "bytes": self._bytes, "sha256": self._hash.hexdigest()}

    def abort(self) -> None:
        try:
            self._file.close()
            self.fs.rm(self.tmp)
        except Exception:  # best effort: a stray temp file is ignored by readers
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            self.abort()


class _HashingSink:
    """File-like object pyarrow can write to; hashes and counts what passes through."""

    def __init__(self, owner: ShardWriter):
        self.owner = owner
        self.closed = False

    def write(self, data) -> int:
        self.owner._raw_write(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def read_table(path: str, columns: Optional[list[str]] = None) -> pa.Table:
    """Read one Arrow IPC shard (all of it); UserError naming the file if it is not one."""
    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as f:
            reader = ipc.open_file(pa.BufferReader(f.read()))
            table = reader.read_all()
    except FileNotFoundError:
        raise UserError(f"{path}: shard not found") from None
    except pa.ArrowInvalid as e:
        raise UserError(f"{path}: not an Arrow shard ({e})") from None
    return table.select(columns) if columns else table


def file_digest(path: str) -> dict:
    """{"bytes", "sha256"} of a file, read in 1 MiB blocks."""
    fs, p = _fs(path)
    h = hashlib.sha256()
    n = 0
    with fs.open(p, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
            n += len(block)
    return {"bytes": n, "sha256": h.hexdigest()}


def verify_shard(path: str, expected: Optional[dict] = None) -> bool:
    """True if `path` exists, is a readable Arrow IPC file and matches `expected`.

    `expected` may hold "rows", "bytes" and "sha256" (as in a manifest entry); keys
    not given are not checked. Never raises for a missing or damaged file.
    """
    fs, p = _fs(path)
    try:
        if not fs.exists(p):
            return False
        expected = expected or {}
        if "sha256" in expected or "bytes" in expected:
            digest = file_digest(path)
            if "sha256" in expected and digest["sha256"] != expected["sha256"]:
                return False
            if "bytes" in expected and digest["bytes"] != expected["bytes"]:
                return False
        with fs.open(p, "rb") as f:
            reader = ipc.open_file(f)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return "rows" not in expected or rows == expected["rows"]
    except Exception:
        return False


# --------------------------------------------------------------------------- datasets


def list_shards(dataset: str, kind: str = SHARDS_DIR) -> list[str]:
    """Paths of a dataset's shards (`kind`: "shards" or "rejects"), in order.

    Taken from the manifest when there is one (the finished set), else from the folder.
    """
    manifest = read_manifest(dataset, missing_ok=True)
    if manifest is not None and kind in (SHARDS_DIR, REJECTS_DIR) and kind in manifest:
        return [join(dataset, kind, s["name"]) for s in manifest[kind]]
    fs, p = _fs(join(dataset, kind))
    if not fs.exists(p):
        return []
    names = sorted(posixpath.basename(x) for x in fs.ls(p, detail=False))
    return [join(dataset, kind, n) for n in names if n.startswith("part-") and n.endswith(".arrow")]


def iter_record_batches(
    dataset: str, columns: Optional[list[str]] = None, kind: str = SHARDS_DIR
) -> Iterator[pa.RecordBatch]:
    """Stream a dataset's record batches shard by shard (one shard's file open at a time)."""
    for path in list_shards(dataset, kind):
        fs, p = _fs(path)
        with fs.open(p, "rb") as f:
            try:
                reader = ipc.open_file(f)
            except pa.ArrowInvalid as e:
                raise UserError(f"{path}: not an Arrow shard ({e})") from None
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                yield batch.select(columns) if columns else batch


def read_manifest(dataset: str, missing_ok: bool = False) -> Optional[dict]:
    """The dataset's manifest.json as a dict (None if absent and `missing_ok`)."""
    path = join(dataset, MANIFEST)
    fs, p = _fs(path)
    try:
        with fs.open(p, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UserError(f"{dataset}: no {MANIFEST} (the stage that writes it has not finished)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} manifest")
    if data.get("version", 0) > VERSION:
        raise UserError(f"{path}: manifest version {data.get('version')} is newer than this code ({VERSION})")
    return data


def write_json_atomic(path: str, data: dict) -> None:
    fs, p = _fs(path)
    parent = posixpath.dirname(p)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(p)}.{uuid.uuid4().hex[:8]}.tmp")
    with fs.open(tmp, "wb") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False).encode("utf-8"))
    fs.mv(tmp, p)


def manifest_digest(dataset: str) -> Optional[str]:
    """sha256 of a dataset's manifest.json (how downstream manifests name their inputs)."""
    fs, p = _fs(join(dataset, MANIFEST))
    try:
        with fs.open(p, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def write_manifest(
    dataset: str,
    *,
    stage: str,
    config: dict,
    shards: Iterable[dict],
    counts: dict,
    inputs: Optional[list[dict]] = None,
    rejects: Optional[Iterable[dict]] = None,
) -> dict:
    """Write manifest.json last and atomically; returns what was written.

    `shards`: [{"name", "rows", "bytes", "sha256"}]; `counts`: {"input", "kept", "rejected": {reason: n}}.
    Refuses counts that break the invariant input = kept + sum(rejected).
    """
    rejected = counts.get("rejected", {})
    if counts["input"] != counts["kept"] + sum(rejected.values()):
        raise ValueError(f"{dataset}: counts break input = kept + rejected: {counts}")
    shards = list(shards)
    if sum(s["rows"] for s in shards) != counts["kept"]:
        raise ValueError(f"{dataset}: shard rows do not add up to kept={counts['kept']}")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": inputs or [],
        "shards": shards,
        "rejects": list(rejects or []),
        "counts": {"input": counts["input"], "kept": counts["kept"], "rejected": dict(sorted(rejected.items()))},
    }
    write_json_atomic(join(dataset, MANIFEST), manifest)
    return manifest
