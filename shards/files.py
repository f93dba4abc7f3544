"""Paths that may be local or fsspec URIs, and atomic writes (temp name, then rename).

Every file the project writes for another stage or a later run (shards, manifests, progress
records, checkpoint metadata) goes through `atomic_open` so a reader never sees half a file.
"""
from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from typing import Iterator

import fsspec


def join(base: str, *parts: str) -> str:
    """Join path parts for a local path or an fsspec URI (always '/')."""
    return posixpath.join(str(base).rstrip("/"), *parts) if parts else str(base)


def url_to_fs(path: str):
    """(filesystem, path within it) for a local path or an fsspec URI."""
    return fsspec.core.url_to_fs(str(path))


def exists(path: str) -> bool:
    fs, p = url_to_fs(path)
    return fs.exists(p)


def remove(path: str) -> None:
    """Delete a file if it is there."""
    fs, p = url_to_fs(path)
    if fs.exists(p):
        fs.rm(p)


def temp_name(path: str) -> str:
    """A sibling name for `path`'s temporary file: hidden, unique, ignored by readers."""
    parent, base = posixpath.split(str(path))
    return posixpath.join(parent, f".{base}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_open(path: str) -> Iterator:
    """Open `path` for binary writing under a temporary name; rename into place on success.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    fs, p = url_to_fs(path)
    parent = posixpath.dirname(p)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = temp_name(p)
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, p)
    except BaseException:
        with contextlib.suppress(Exception):  # already gone or never written
            fs.rm(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def write_json_atomic(path: str, data) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
