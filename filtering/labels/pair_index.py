"""Find a pair's caption, URL and image by uid in datasets: the labelling page shows pairs this way.

    index = PairIndex()
    index.add("dataset-emb")            # reads the shards' uid columns once
    pair = index.get(uid)               # Pair(uid, caption, url, image, image_format), or None

Per pair the index holds the uid's 128 bits as two uint64 and where the row is (shard, record batch,
row: int32 each), sorted for binary search: 28 bytes a pair, 280 MB for 10M pairs. A lookup reads one
record batch of one shard (memory-mapped for a local file). A request names a uid, never a path: the
only files read are the shards of datasets the server was given or the database's queues name.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

import shards as sh

UID = re.compile(r"^[0-9a-f]{32}$")
IMAGE_TYPES = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class Pair:
    uid: str
    caption: str
    url: str
    image: bytes
    image_format: str


def _halves(uid: str) -> tuple[int, int]:
    raw = bytes.fromhex(uid)
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


class DatasetIndex:
    """The uid index of one dataset's shards."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.paths = sh.list_shards(dataset)
        if not self.paths:
            raise sh.UserError(f"{dataset}: no shards (is it a dataset folder?)")
        hi, lo, where = [], [], []
        for s, path in enumerate(self.paths):
            for b, batch in enumerate(sh.iter_shard_batches(path, ["uid"])):
                for r, uid in enumerate(batch.column(0).to_pylist()):
                    if isinstance(uid, str) and UID.match(uid):
                        h, l_ = _halves(uid)
                        hi.append(h)
                        lo.append(l_)
                        where.append((s, b, r))
        order = np.lexsort((np.array(lo, np.uint64), np.array(hi, np.uint64)))
        self.hi = np.array(hi, np.uint64)[order]
        self.lo = np.array(lo, np.uint64)[order]
        self.where = np.array(where, np.int32).reshape(-1, 3)[order]
        self._readers: dict[int, ipc.RecordBatchFileReader] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.hi)

    def locate(self, uid: str) -> Optional[tuple[int, int, int]]:
        if not UID.match(uid):
            return None
        h, l_ = _halves(uid)
        start, stop = np.searchsorted(self.hi, np.uint64(h), "left"), np.searchsorted(self.hi, np.uint64(h), "right")
        for i in range(start, stop):
            if int(self.lo[i]) == l_:
                return tuple(int(x) for x in self.where[i])
        return None

    def _reader(self, shard: int) -> ipc.RecordBatchFileReader:
        reader = self._readers.get(shard)
        if reader is None:
            path = self.paths[shard]
            fs, p = sh.url_to_fs(path)
            source = pa.memory_map(p) if type(fs).__name__ == "LocalFileSystem" else pa.BufferReader(fs.cat_file(p))
            reader = self._readers[shard] = ipc.open_file(source)
        return reader

    def get(self, uid: str) -> Optional[Pair]:
        found = self.locate(uid)
        if found is None:
            return None
        shard, batch, row = found
        with self._lock:
            record = self._reader(shard).get_batch(batch).slice(row, 1).to_pylist()[0]
        if record.get("uid") != uid:
            return None
        return Pair(uid=uid, caption=record.get("caption") or "", url=record.get("url") or "",
                    image=record.get("image") or b"", image_format=(record.get("image_format") or "").lower())


class PairIndex:
    """Indexes of several datasets, each built on first use; `get` looks in a named dataset first."""

    def __init__(self):
        self._indexes: dict[str, DatasetIndex] = {}
        self._lock = threading.Lock()

    def add(self, dataset: str) -> DatasetIndex:
        with self._lock:
            index = self._indexes.get(dataset)
            if index is None:
                index = self._indexes[dataset] = DatasetIndex(dataset)
            return index

    @property
    def datasets(self) -> list[str]:
        return list(self._indexes)

    def get(self, uid: str, dataset: Optional[str] = None) -> Optional[Pair]:
        if dataset is not None:
            try:
                found = self.add(dataset).get(uid)
            except sh.UserError:  # a queue naming a dataset that is gone: look in the others
                found = None
            if found is not None:
                return found
        for index in list(self._indexes.values()):
            found = index.get(uid)
            if found is not None:
                return found
        return None

    def knows(self, uid: str) -> bool:
        return any(index.locate(uid) is not None for index in list(self._indexes.values()))
