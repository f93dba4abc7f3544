"""What every route of the web app shares, built once per app."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from filtering.labels import LabelStore
from filtering.labels.assignment import Item, Policy
from filtering.labels.pair_index import PairIndex


@dataclass(frozen=True)
class ServeSettings:
    db: str                            # labels database: path or SQLAlchemy URL
    dataset: Optional[str] = None      # embeddings dataset the admin queues pairs from
    filters: Optional[str] = None      # current filters folder (active learning)
    lease_s: float = 600.0
    gold_every: int = 10
    busy_timeout_s: float = 30.0
    secure_cookies: bool = False       # True behind https: cookies only over TLS


@dataclass
class AppContext:
    settings: ServeSettings
    store: LabelStore
    pairs: PairIndex
    policy: Policy
    _encoders: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: ServeSettings) -> "AppContext":
        store = LabelStore(settings.db, busy_timeout_s=settings.busy_timeout_s)
        pairs = PairIndex()
        if settings.dataset:
            pairs.add(settings.dataset)  # now, so the first request does not wait for the index
        return cls(settings=settings, store=store, pairs=pairs,
                   policy=Policy(lease_s=settings.lease_s, gold_every=settings.gold_every))

    def item_json(self, item: Optional[Item]) -> Optional[dict]:
        """What the page shows of an item; the caption and URL are data for textContent, never markup."""
        if item is None:
            return None
        pair = self.pairs.get(item.uid, item.dataset)
        return {"uid": item.uid, "filter": item.filter, "queue_id": item.queue_id, "queue": item.queue,
                "caption": pair.caption if pair else "", "url": pair.url if pair else "",
                "image": pair is not None}

    def can_show(self, uid: str) -> bool:
        return self.pairs.knows(uid)

    def text_encoder(self, dataset: str) -> tuple[Callable, dict]:
        """The CLIP text encoder of `dataset`'s embeddings, loaded once (admin search queues)."""
        with self._lock:
            if dataset not in self._encoders:
                import torch

                from filtering.labels.pickers import text_encoder

                self._encoders[dataset] = text_encoder(dataset, None, "cuda" if torch.cuda.is_available() else "cpu")
            return self._encoders[dataset]
