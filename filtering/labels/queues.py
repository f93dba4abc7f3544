"""Queues: batches of pairs picked for one filter, answered by labels for the same (uid, filter).

An item is answered once `labels_per_item` raters have a current (not undone) label for its pair
and the queue's filter, whichever door the label came in by (page, import, ground truth); a skip
counts as an answer (the rater saw it). Functions take a connection inside the caller's transaction.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import sqlalchemy as sa

import shards as sh
from filtering.labels.schema import QUEUE_KINDS, labels, queue_items, queues, utc_now

ITEM_CHUNK = 2000  # rows per INSERT statement (well under SQLite's bound-parameter limit)


@dataclass(frozen=True)
class QueueItem:
    """A picked pair and what picked it (similarity for search, margin for active learning)."""

    uid: str
    similarity: Optional[float] = None
    margin: Optional[float] = None


@dataclass(frozen=True)
class QueueInfo:
    id: int
    name: str
    filter: str
    kind: str
    query: Optional[str]
    filter_version: Optional[str]
    dataset: Optional[str]
    params: Optional[dict]
    created: dt.datetime
    labels_per_item: int
    items: int = 0
    answered: int = 0

    @property
    def pending(self) -> int:
        return self.items - self.answered

    @property
    def picked_by(self) -> str:
        """How the pairs were picked, in a few words: the seed, the query, or the filters' version."""
        if self.kind == "search":
            return f'"{self.query}"'
        if self.kind == "active":
            return f"filters {(self.filter_version or '')[:12]}"
        return f"seed {(self.params or {}).get('seed')}"


@dataclass(frozen=True)
class PendingItem:
    queue_id: int
    queue: str
    filter: str
    uid: str
    dataset: Optional[str]


def create_queue(conn: sa.Connection, *, filter_name: str, kind: str, items: Sequence[QueueItem],
                 name: Optional[str] = None, query: Optional[str] = None, filter_version: Optional[str] = None,
                 dataset: Optional[str] = None, params: Optional[dict] = None, created_by: Optional[int] = None,
                 labels_per_item: int = 1) -> QueueInfo:
    """Insert a queue and its items in order; the default name is FILTER-KIND-ID."""
    if kind not in QUEUE_KINDS:
        raise ValueError(f"queue kind {kind!r} is not one of {QUEUE_KINDS}")
    if not isinstance(labels_per_item, int) or labels_per_item < 1:
        raise sh.UserError(f"--labels-per-item: {labels_per_item}; give at least 1 rater per item")
    if name is not None and conn.execute(sa.select(queues.c.id).where(queues.c.name == name)).first():
        raise sh.UserError(f"--queue: a queue named {name!r} exists; choose another name")
    placeholder = f"new-{uuid.uuid4().hex}"
    queue_id = conn.execute(queues.insert().values(
        name=name or placeholder, filter=filter_name, kind=kind, query=query, filter_version=filter_version,
        dataset=dataset, params=params, created=utc_now(), created_by=created_by,
        labels_per_item=labels_per_item)).inserted_primary_key[0]
    if name is None:
        conn.execute(queues.update().where(queues.c.id == queue_id).values(name=f"{filter_name}-{kind}-{queue_id}"))
    rows = [{"queue_id": queue_id, "position": i, "uid": it.uid, "similarity": it.similarity, "margin": it.margin}
            for i, it in enumerate(items)]
    for start in range(0, len(rows), ITEM_CHUNK):
        conn.execute(queue_items.insert(), rows[start:start + ITEM_CHUNK])
    return get_queue(conn, name or f"{filter_name}-{kind}-{queue_id}")


def _answered(q=queues, qi=queue_items):
    """A correlated count: raters with a current label for this item's pair and its queue's filter."""
    return (sa.select(sa.func.count(sa.distinct(labels.c.rater_id)))
            .where(labels.c.uid == qi.c.uid, labels.c.filter == q.c.filter, labels.c.undone_at.is_(None))
            .scalar_subquery())


def _info(row, items: int = 0, answered: int = 0) -> QueueInfo:
    return QueueInfo(id=row.id, name=row.name, filter=row.filter, kind=row.kind, query=row.query,
                     filter_version=row.filter_version, dataset=row.dataset, params=row.params, created=row.created,
                     labels_per_item=row.labels_per_item, items=items, answered=answered)


def queue_summaries(conn: sa.Connection, names: Optional[Iterable[str]] = None) -> list[QueueInfo]:
    """Every queue (or those named) with its item and answered counts, oldest first."""
    done = sa.case((_answered() >= queues.c.labels_per_item, 1), else_=0)
    counts = (sa.select(queue_items.c.queue_id, sa.func.count().label("n_items"),
                         sa.func.sum(done).label("n_answered"))
              .select_from(queue_items.join(queues, queues.c.id == queue_items.c.queue_id))
              .group_by(queue_items.c.queue_id).subquery())
    query = (sa.select(queues, counts.c.n_items, counts.c.n_answered)
             .select_from(queues.outerjoin(counts, counts.c.queue_id == queues.c.id)).order_by(queues.c.id))
    if names is not None:
        query = query.where(queues.c.name.in_(list(names)))
    return [_info(r, int(r.n_items or 0), int(r.n_answered or 0)) for r in conn.execute(query)]


def get_queue(conn: sa.Connection, name: str) -> QueueInfo:
    found = queue_summaries(conn, [name])
    if not found:
        known = [r.name for r in conn.execute(sa.select(queues.c.name).order_by(queues.c.id.desc()).limit(5))]
        raise sh.UserError(f"--queue: no queue named {name!r}" + (f" (newest: {', '.join(known)})" if known else ""))
    return found[0]


def pending_items(conn: sa.Connection, *, queue: Optional[str] = None,
                  filter_name: Optional[str] = None) -> list[PendingItem]:
    """Items still wanting answers, in queue order then position (of one queue or filter, or all)."""
    query = (sa.select(queues.c.id, queues.c.name, queues.c.filter, queues.c.dataset, queue_items.c.uid)
             .select_from(queue_items.join(queues, queues.c.id == queue_items.c.queue_id))
             .where(_answered() < queues.c.labels_per_item)
             .order_by(queues.c.id, queue_items.c.position))
    if queue is not None:
        query = query.where(queues.c.id == get_queue(conn, queue).id)
    if filter_name is not None:
        query = query.where(queues.c.filter == filter_name)
    return [PendingItem(queue_id=r.id, queue=r.name, filter=r.filter, uid=r.uid, dataset=r.dataset)
            for r in conn.execute(query)]


def queued_uids(conn: sa.Connection, filter_name: str) -> set[str]:
    """Every pair in any queue of `filter_name` (answered or not)."""
    query = (sa.select(queue_items.c.uid).distinct()
             .select_from(queue_items.join(queues, queues.c.id == queue_items.c.queue_id))
             .where(queues.c.filter == filter_name))
    return set(conn.scalars(query))
