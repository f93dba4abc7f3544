"""What a filter report needs from scoring every pair, gathered in one streaming pass.

Per filter: a histogram of all scores on fixed bins (so shards scored apart merge exactly), how
many pairs it fires on, and the pairs nearest its threshold on both sides, with a small JPEG
thumbnail each (made only for the few pairs that make the cut). A summary is plain JSON (the
filter stage's workers write one per shard; the driver merges them).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from filtering.svm_filter import SvmFilter

BINS = 60
THUMBNAIL_SIDE = 128
MAX_DECODE_PIXELS = 64_000_000  # never decode a decompression bomb just for a thumbnail


def histogram_edges(filt: SvmFilter) -> list[float]:
    """BINS equal bins over the held-out scores and the threshold, widened 10% (a pure function of
    the saved filter, so every worker bins alike; scores outside land in the end bins)."""
    values = np.append(np.asarray(filt.held_out_scores, dtype=np.float64), filt.threshold)
    lo, hi = float(values.min()), float(values.max())
    pad = 0.1 * (hi - lo) or 1.0
    return np.linspace(lo - pad, hi + pad, BINS + 1).tolist()


def thumbnail_jpeg(image: Optional[bytes], side: int = THUMBNAIL_SIDE) -> Optional[bytes]:
    """A small JPEG of encoded image bytes, or None if they do not decode."""
    if not image:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as im:
            if im.width * im.height > MAX_DECODE_PIXELS:
                return None
            im.draft("RGB", (side, side))
            im = im.convert("RGB")
            im.thumbnail((side, side))
            out = io.BytesIO()
            im.save(out, format="JPEG", quality=85)
            return out.getvalue()
    except Exception:  # a broken image is shown as missing, never a crash
        return None


@dataclass
class Example:
    uid: str
    caption: str
    score: float
    distance: float               # |score - threshold|
    thumbnail: Optional[bytes]    # JPEG

    def to_json(self) -> dict:
        return {"uid": self.uid, "caption": self.caption, "score": self.score, "distance": self.distance,
                "thumbnail": base64.b64encode(self.thumbnail).decode("ascii") if self.thumbnail else None}

    @classmethod
    def from_json(cls, d: dict) -> "Example":
        thumb = d.get("thumbnail")
        return cls(uid=str(d["uid"]), caption=str(d["caption"]), score=float(d["score"]),
                   distance=float(d["distance"]), thumbnail=base64.b64decode(thumb) if thumb else None)


class ScoreSummary:
    """Accumulates `add(scores, ...)` batches; `merge` another; `to_json` / `from_json`."""

    def __init__(self, names: Sequence[str], thresholds: Sequence[float], edges: dict[str, list[float]],
                 examples: int = 8):
        self.names, self.thresholds = list(names), [float(t) for t in thresholds]
        self.edges = {n: list(map(float, edges[n])) for n in self.names}
        self.k = examples
        self.rows = 0
        self.fired = {n: 0 for n in self.names}
        self.any_fired = 0
        self.counts = {n: np.zeros(len(self.edges[n]) - 1, dtype=np.int64) for n in self.names}
        self.removed_side: dict[str, list[Example]] = {n: [] for n in self.names}
        self.kept_side: dict[str, list[Example]] = {n: [] for n in self.names}

    @classmethod
    def for_filters(cls, filters: Sequence[SvmFilter], examples: int = 8) -> "ScoreSummary":
        return cls([f.name for f in filters], [f.threshold for f in filters],
                   {f.name: histogram_edges(f) for f in filters}, examples)

    def add(self, scores: np.ndarray, uids: Sequence[str], captions: Sequence[Optional[str]],
            images: Optional[Sequence[Optional[bytes]]] = None) -> None:
        """scores: (n, F) in this summary's filter order; images: encoded bytes (or None) per row."""
        fired = scores >= np.asarray(self.thresholds)
        self.rows += len(scores)
        self.any_fired += int(fired.any(axis=1).sum())
        for j, name in enumerate(self.names):
            col = scores[:, j]
            self.fired[name] += int(fired[:, j].sum())
            edges = np.asarray(self.edges[name])
            self.counts[name] += np.histogram(np.clip(col, edges[0], edges[-1]), bins=edges)[0]
            for side, mask in ((self.removed_side, fired[:, j]), (self.kept_side, ~fired[:, j])):
                side[name] = self._nearest(side[name], col, mask, self.thresholds[j], uids, captions, images)

    def _nearest(self, current: list[Example], col, mask, threshold, uids, captions, images) -> list[Example]:
        rows = np.flatnonzero(mask)
        if not len(rows) or not self.k:
            return current
        distance = np.abs(col[rows] - threshold)
        take = rows[np.argsort(distance, kind="stable")[:self.k]]
        candidates = [(abs(float(col[i]) - threshold), uids[i], int(i)) for i in take]
        merged = sorted([(e.distance, e.uid, e) for e in current] + candidates, key=lambda c: (c[0], c[1]))[:self.k]
        out = []
        for distance, uid, item in merged:
            if isinstance(item, Example):
                out.append(item)
            else:  # from this batch: only now is its thumbnail worth making
                out.append(Example(uid=str(uid), caption=str(captions[item] or ""), score=float(col[item]),
                                   distance=float(distance),
                                   thumbnail=thumbnail_jpeg(images[item]) if images is not None else None))
        return out

    def merge(self, other: "ScoreSummary") -> "ScoreSummary":
        if other.names != self.names or other.edges != self.edges:
            raise ValueError("score summaries of different filters cannot be merged")
        self.rows += other.rows
        self.any_fired += other.any_fired
        for name in self.names:
            self.fired[name] += other.fired[name]
            self.counts[name] += other.counts[name]
            for mine, theirs in ((self.removed_side, other.removed_side), (self.kept_side, other.kept_side)):
                mine[name] = sorted(mine[name] + theirs[name], key=lambda e: (e.distance, e.uid))[:self.k]
        return self

    def to_json(self) -> dict:
        return {"names": self.names, "thresholds": self.thresholds, "edges": self.edges, "examples": self.k,
                "rows": self.rows, "any_fired": self.any_fired, "fired": self.fired,
                "counts": {n: c.tolist() for n, c in self.counts.items()},
                "removed_side": {n: [e.to_json() for e in v] for n, v in self.removed_side.items()},
                "kept_side": {n: [e.to_json() for e in v] for n, v in self.kept_side.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "ScoreSummary":
        s = cls(d["names"], d["thresholds"], d["edges"], int(d["examples"]))
        s.rows, s.any_fired = int(d["rows"]), int(d["any_fired"])
        s.fired = {n: int(v) for n, v in d["fired"].items()}
        s.counts = {n: np.asarray(v, dtype=np.int64) for n, v in d["counts"].items()}
        s.removed_side = {n: [Example.from_json(e) for e in v] for n, v in d["removed_side"].items()}
        s.kept_side = {n: [Example.from_json(e) for e in v] for n, v in d["kept_side"].items()}
        return s
