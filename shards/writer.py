"""Write shards atomically: one table at once (`write_table`) or batches as rows arrive (`ShardWriter`)."""
from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa
import pyarrow.ipc as ipc

from shards.files import atomic_open, url_to_fs, temp_name


def write_table(path: str, table: pa.Table) -> dict:
    """Write `table` as one Arrow IPC file atomically (temp name, then rename).

    Works for local paths and fsspec URIs. Returns {"rows", "bytes", "sha256"} of the file.
    """
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    with atomic_open(path) as f:
        f.write(data)
    return {"rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class ShardWriter:
    """Stream record batches into one Arrow IPC file, renamed into place by `close()`.

    For shards too big to hold as one table: `write(batch)` as rows arrive.
    `abort()` (or an exception inside `with`) removes the temporary file.
    `close()` returns {"rows", "bytes", "sha256"}, hashed as the bytes went out (never re-read).
    """

    def __init__(self, path: str, schema: pa.Schema):
        self.fs, self.path = url_to_fs(path)
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.tmp = temp_name(self.path)
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
