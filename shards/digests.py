"""sha256 of files and bytes: the one implementation shards and checkpoints share."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from shards.files import url_to_fs

_BLOCK = 1 << 20  # checkpoint files can be gigabytes: read in 1 MiB blocks


@dataclass(frozen=True)
class FileDigest:
    bytes: int
    sha256: str


def file_digest(path) -> FileDigest:
    """Size and sha256 of a local file or fsspec URI, read once in 1 MiB blocks."""
    fs, p = url_to_fs(str(path))
    h = hashlib.sha256()
    n = 0
    with fs.open(p, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            h.update(block)
            n += len(block)
    _audit(str(path), n)
    return FileDigest(bytes=n, sha256=h.hexdigest())


def _audit(path: str, n: int) -> None:
    """With GLIDE_DIGEST_LOG=FILE set, append "bytes<TAB>path" for every file hashed.

    How to see what a run reads to verify (e.g. a resume across Ray workers): each process
    appends one short line, so the log stays whole without locking.
    """
    log = os.environ.get("GLIDE_DIGEST_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{n}\t{path}\n")


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
