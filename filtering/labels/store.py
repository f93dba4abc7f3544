"""LabelStore: the labels database through one object (the CLI and the labelling page both use it).

    store = LabelStore("labels.db")            # or sqlite:///..., postgresql://...; created/migrated on open
    store.add_labels([NewLabel(uid, "people", "yes", "ana", client_id="c1b2...")])   # a resend is stored once
    store.undo("ana")                          # reverts ana's latest label; her previous answer is current again
    store.labels("people")                     # [(uid, True/False)]: what fit-filters learns from

A rater's current answer for a pair and filter is their latest label for it that is not undone.
`labels(filter)` combines the raters: positive if any rater's current answer is yes (for a safety
filter a missed positive costs more than a needlessly removed pair), negative if all say no; skips
are left out. `answers()` gives each rater's current answers (export, agreement).
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import sqlalchemy as sa

import shards as sh
from filtering.filter_files import check_filter_name, filter_order
from filtering.labels import queues as queue_db
from filtering.labels import raters as rater_db
from filtering.labels.database import (DEFAULT_BUSY_TIMEOUT_S, display_name, open_engine, read_transaction,
                                       upgrade, write_transaction)
from filtering.labels.schema import (ANSWERS, CLIENT_ID_LENGTH, SOURCES, label_events, labels, raters, utc_now)

UID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
WRITE_CHUNK = 500   # labels per write transaction: each holds the SQLite write lock for milliseconds
INSERT_ATTEMPTS = 3  # a server backend may race two senders of one client_id: the retry finds it stored


@dataclass(frozen=True)
class NewLabel:
    """One answer to store. `client_id`: the sender's id for it (a resend with the same id is stored once)."""

    uid: str
    filter: str
    answer: str                         # yes / no / skip
    rater: str
    source: str = "page"                # ground_truth / import / page
    client_id: Optional[str] = None     # default: a fresh uuid (no resend protection)
    created: Optional[dt.datetime] = None  # when answered (aware); default: now
    dataset: Optional[str] = None
    queue_id: Optional[int] = None
    answer_ms: Optional[int] = None     # the page: how long the pair was shown before the answer


@dataclass(frozen=True)
class AddResult:
    stored: int
    duplicates: int  # client ids already stored (resends), not stored again


@dataclass(frozen=True)
class Answer:
    """A rater's current answer for a pair and filter."""

    uid: str
    filter: str
    answer: str
    rater: str
    created: dt.datetime
    client_id: str


@dataclass(frozen=True)
class Undone:
    label_id: int
    uid: str
    filter: str
    answer: str
    restored: Optional[str]  # the rater's answer for the pair now current again (None: unanswered)


def check_label(label: NewLabel, where: str) -> None:
    """UserError naming `where` and the field when a label cannot be stored."""
    if not isinstance(label.uid, str) or not UID_PATTERN.match(label.uid):
        raise sh.UserError(f"{where}: uid {str(label.uid)[:80]!r} is not a pair uid (32 lowercase hex characters)")
    check_filter_name(label.filter, where)
    if label.answer not in ANSWERS:
        raise sh.UserError(f"{where}: answer {str(label.answer)[:40]!r} is not one of {', '.join(ANSWERS)}")
    rater_db.check_rater_name(label.rater, where)
    if label.source not in SOURCES:
        raise sh.UserError(f"{where}: source {label.source!r} is not one of {', '.join(SOURCES)}")
    if label.client_id is not None and not (0 < len(label.client_id) <= CLIENT_ID_LENGTH):
        raise sh.UserError(f"{where}: client id must be 1-{CLIENT_ID_LENGTH} characters")
    if label.created is not None and label.created.tzinfo is None:
        raise sh.UserError(f"{where}: time {label.created.isoformat()} has no time zone")
    if label.answer_ms is not None and not 0 <= label.answer_ms < 2 ** 31:
        raise sh.UserError(f"{where}: answer time {label.answer_ms} ms is out of range")


_KNOWN_CLIENT_IDS = sa.select(labels.c.client_id).where(labels.c.client_id.in_(sa.bindparam("ids", expanding=True)))


def insert_labels(conn: sa.Connection, chunk: Sequence[NewLabel], *,
                  rater_ids: Optional[dict[str, int]] = None) -> tuple[int, int]:
    """Insert checked labels with client ids inside the caller's write transaction, skipping client ids
    already stored (and repeats within `chunk`); returns (stored, duplicates). `rater_ids`: {name: id}
    of the labels' raters when the caller knows them (else found, or created)."""
    ids = [label.client_id for label in chunk]
    seen = set(conn.scalars(_KNOWN_CLIENT_IDS, {"ids": ids}))
    fresh = []
    for label in chunk:
        if label.client_id not in seen:
            seen.add(label.client_id)
            fresh.append(label)
    if fresh:
        rater_ids = rater_ids or rater_db.rater_ids(conn, {label.rater for label in fresh}, create=True)
        now = utc_now()
        conn.execute(labels.insert(), [{
            "client_id": label.client_id, "uid": label.uid, "filter": label.filter,
            "answer": label.answer, "rater_id": rater_ids[label.rater], "source": label.source,
            "dataset": label.dataset, "queue_id": label.queue_id, "answer_ms": label.answer_ms,
            "created": label.created or now, "stored": now} for label in fresh])
    return len(fresh), len(chunk) - len(fresh)


def retry_integrity(write):
    """`write()` again when a server backend raced another sender of the same unique key: the retry
    finds it stored. (SQLite's BEGIN IMMEDIATE serialises writers, so there it succeeds first time.)"""
    for attempt in range(INSERT_ATTEMPTS):
        try:
            return write()
        except sa.exc.IntegrityError:
            if attempt == INSERT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class LabelStore:
    """The labels database at `db` (a path or an SQLAlchemy URL), at the newest schema."""

    def __init__(self, db: str, *, create: bool = True, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S):
        self.db = str(db)
        self.name = display_name(self.db)  # for messages: a URL's password masked
        self.engine = open_engine(self.db, create=create, busy_timeout_s=busy_timeout_s)
        upgrade(self.engine, where=self.name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def write(self):
        return write_transaction(self.engine)

    def read(self):
        return read_transaction(self.engine)

    # ------------------------------------------------------------ writing labels
    def add_label(self, uid: str, filter_name: str, answer: str, rater: str, **fields) -> AddResult:
        return self.add_labels([NewLabel(uid, filter_name, answer, rater, **fields)])

    def add_labels(self, new: Iterable[NewLabel], *, where: str = "label") -> AddResult:
        """Store labels in short transactions of WRITE_CHUNK; client ids already stored are skipped."""
        stored = duplicates = 0
        chunk: list[NewLabel] = []
        for label in new:
            check_label(label, where)
            chunk.append(label if label.client_id else _with_fresh_client_id(label))
            if len(chunk) == WRITE_CHUNK:
                s, d = self._insert_chunk(chunk)
                stored, duplicates, chunk = stored + s, duplicates + d, []
        if chunk:
            s, d = self._insert_chunk(chunk)
            stored, duplicates = stored + s, duplicates + d
        return AddResult(stored=stored, duplicates=duplicates)

    def _insert_chunk(self, chunk: list[NewLabel]) -> tuple[int, int]:
        def write():
            with self.write() as conn:
                return insert_labels(conn, chunk)

        return retry_integrity(write)

    def undo(self, rater: str, *, client_id: Optional[str] = None, label_id: Optional[int] = None) -> Optional[Undone]:
        """Revert `rater`'s latest label still in force (or `label_id`), recorded in the audit trail.

        A resent undo (same `client_id`) reports the label it reverted the first time and reverts
        nothing more. None when there is nothing of the rater's to undo.
        """
        with self.write() as conn:
            if client_id is not None:
                done = conn.execute(sa.select(label_events.c.label_id)
                                    .where(label_events.c.client_id == client_id)).first()
                if done is not None:
                    return self._undone(conn, done.label_id)
            rater_id = rater_db.rater_ids(conn, [rater], create=False).get(rater)
            if rater_id is None:
                return None
            query = (sa.select(labels.c.id).where(labels.c.rater_id == rater_id, labels.c.undone_at.is_(None))
                     .order_by(labels.c.id.desc()).limit(1))
            if label_id is not None:
                query = query.where(labels.c.id == label_id)
            target = conn.scalar(query)
            if target is None:
                return None
            now = utc_now()
            conn.execute(labels.update().where(labels.c.id == target).values(undone_at=now))
            conn.execute(label_events.insert().values(label_id=target, action="undo", rater_id=rater_id,
                                                      client_id=client_id, at=now))
            return self._undone(conn, target)

    def _undone(self, conn: sa.Connection, label_id: int) -> Undone:
        row = conn.execute(sa.select(labels).where(labels.c.id == label_id)).one()
        restored = conn.scalar(sa.select(labels.c.answer).where(
            labels.c.uid == row.uid, labels.c.filter == row.filter, labels.c.rater_id == row.rater_id,
            labels.c.undone_at.is_(None)).order_by(labels.c.created.desc(), labels.c.id.desc()).limit(1))
        return Undone(label_id=label_id, uid=row.uid, filter=row.filter, answer=row.answer, restored=restored)

    # ------------------------------------------------------------ reading labels
    def _current(self, filter_name: Optional[str]):
        """Each rater's current label per pair and filter (a subquery)."""
        rank = sa.func.row_number().over(partition_by=(labels.c.uid, labels.c.filter, labels.c.rater_id),
                                         order_by=(labels.c.created.desc(), labels.c.id.desc()))
        query = sa.select(labels, rank.label("rank")).where(labels.c.undone_at.is_(None))
        if filter_name is not None:
            query = query.where(labels.c.filter == filter_name)
        ranked = query.subquery()
        return sa.select(ranked).where(ranked.c.rank == 1).subquery()

    def labels(self, filter_name: str) -> list[tuple[str, bool]]:
        """[(uid, label)] of every pair with a yes or no for `filter_name`, by uid (see the module doc)."""
        current = self._current(filter_name)
        combined: dict[str, bool] = {}
        with self.read() as conn:
            for uid, answer in conn.execute(sa.select(current.c.uid, current.c.answer)
                                            .where(current.c.answer != "skip")):
                combined[uid] = combined.get(uid, False) or answer == "yes"
        return sorted(combined.items())

    def answers(self, filter_name: Optional[str] = None, *, skips: bool = True) -> list[Answer]:
        """Every rater's current answer per pair (of one filter or all), ordered by filter, uid, rater."""
        current = self._current(filter_name)
        query = (sa.select(current.c.uid, current.c.filter, current.c.answer, raters.c.name, current.c.created,
                           current.c.client_id)
                 .join(raters, raters.c.id == current.c.rater_id)
                 .order_by(current.c.filter, current.c.uid, raters.c.name))
        if not skips:
            query = query.where(current.c.answer != "skip")
        with self.read() as conn:
            return [Answer(uid=r.uid, filter=r.filter, answer=r.answer, rater=r.name,
                           created=r.created, client_id=r.client_id) for r in conn.execute(query)]

    def history(self, uid: str, filter_name: str) -> list[dict]:
        """Every label ever given for a pair and filter, oldest first, undone ones with their undo time."""
        query = (sa.select(labels.c.id, labels.c.answer, raters.c.name.label("rater"), labels.c.source,
                           labels.c.created, labels.c.undone_at)
                 .join(raters, raters.c.id == labels.c.rater_id)
                 .where(labels.c.uid == uid, labels.c.filter == filter_name).order_by(labels.c.id))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def filters(self) -> list[str]:
        """Filters with at least one label in force, in the filters' order."""
        with self.read() as conn:
            names = conn.scalars(sa.select(labels.c.filter).distinct().where(labels.c.undone_at.is_(None)))
            return filter_order(names)

    def labelled_uids(self, filter_name: str) -> set[str]:
        """Pairs with any label in force for `filter_name` (skips included: someone saw them)."""
        with self.read() as conn:
            return set(conn.scalars(sa.select(labels.c.uid).distinct()
                                    .where(labels.c.filter == filter_name, labels.c.undone_at.is_(None))))

    def status(self) -> dict:
        """{"filters": {name: {"yes", "no", "skip", "queued"}}, "queues": [QueueInfo]}: pairs per combined
        answer (as `labels` combines them; "skip" when every rater skipped) and pending queue items."""
        current = self._current(None)
        per_pair: dict[tuple[str, str], str] = {}
        with self.read() as conn:
            for name, uid, answer in conn.execute(sa.select(current.c.filter, current.c.uid, current.c.answer)):
                old = per_pair.get((name, uid), "skip")
                per_pair[(name, uid)] = "yes" if "yes" in (old, answer) else "no" if "no" in (old, answer) else "skip"
            summaries = queue_db.queue_summaries(conn)
        names = filter_order({n for n, _ in per_pair} | {q.filter for q in summaries})
        filters = {n: {"yes": 0, "no": 0, "skip": 0, "queued": 0} for n in names}
        for (name, _), answer in per_pair.items():
            filters[name][answer] += 1
        for q in summaries:
            filters[q.filter]["queued"] += q.pending
        return {"filters": filters, "queues": summaries}

    # ------------------------------------------------------------ queues
    def create_queue(self, *, filter_name: str, kind: str, items: Sequence[queue_db.QueueItem],
                     **fields) -> queue_db.QueueInfo:
        with self.write() as conn:
            return queue_db.create_queue(conn, filter_name=filter_name, kind=kind, items=items, **fields)

    def queues(self) -> list[queue_db.QueueInfo]:
        with self.read() as conn:
            return queue_db.queue_summaries(conn)

    def queue(self, name: str) -> queue_db.QueueInfo:
        with self.read() as conn:
            return queue_db.get_queue(conn, name)

    def pending(self, *, queue: Optional[str] = None, filter_name: Optional[str] = None) -> list[queue_db.PendingItem]:
        with self.read() as conn:
            return queue_db.pending_items(conn, queue=queue, filter_name=filter_name)

    def seen_uids(self, filter_name: str) -> set[str]:
        """Pairs a new queue for `filter_name` must not pick: labelled, or already in one of its queues."""
        with self.read() as conn:
            queued = queue_db.queued_uids(conn, filter_name)
        return queued | self.labelled_uids(filter_name)

    # ------------------------------------------------------------ raters (the labelling page signs them in)
    def add_rater(self, name: str, *, admin: bool = False) -> str:
        """A new sign-in token for `name` (shown once; only its hash is stored)."""
        with self.write() as conn:
            return rater_db.issue_token(conn, name, admin=admin)

    def authenticate(self, token: str) -> Optional[rater_db.Rater]:
        with self.read() as conn:
            return rater_db.authenticate(conn, token)

    def revoke_rater(self, name: str) -> bool:
        with self.write() as conn:
            return rater_db.revoke(conn, name)

    def raters(self) -> list[rater_db.Rater]:
        with self.read() as conn:
            return rater_db.list_raters(conn)


def _with_fresh_client_id(label: NewLabel) -> NewLabel:
    from dataclasses import replace

    return replace(label, client_id=uuid.uuid4().hex)
