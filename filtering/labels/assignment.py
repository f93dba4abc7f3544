"""Hand queue items to raters one at a time: k labels per item, expiring leases, gold items mixed in.

    policy = Policy(lease_s=600, gold_every=10)
    item = next_item(store, rater, policy)            # what the rater sees next (None: nothing left for them)
    stored = submit(store, rater, PageAnswer(...))    # the answer, once per client id; the lease released
    item = take_back(store, rater, undone, policy)    # after an undo the pair is the rater's again

An item wants `labels_per_item` (k) raters. Handing it out takes a lease for the rater that expires
after `lease_s`; an item goes to nobody else while the raters who answered it plus the other raters'
live leases reach k, so raters working at once never over-assign items. A lease that expires (the
rater walked away) frees its place. Each rater gets items in queue order; a rater who reloads the
page gets their leased item back.

Gold items (`gold_items`: pairs with a known answer per filter) are mixed in: when a rater's count of
page labels is one short of a multiple of `gold_every`, the next pair shown is a gold item of the
queue's filter they have not answered, served exactly like any other pair (the page cannot tell).
Their answers are ordinary labels; `quality.gold_accuracy` scores them.

Every step is one short write transaction (BEGIN IMMEDIATE on SQLite): finding the next item and
leasing it is one step, so two raters asking at once never both take the last place of an item; a
keypress (`answer_and_next`) stores the answer and leases the next item in the same transaction.
"""
from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass, replace
from typing import Callable, Optional

import sqlalchemy as sa

import shards as sh
from filtering.labels.queues import QueueInfo, queue_summaries
from filtering.labels.raters import Rater
from filtering.labels.schema import UtcDateTime, gold_items, labels, leases, queue_items, queues, utc_now
from filtering.labels.store import LabelStore, NewLabel, check_label, insert_labels, retry_integrity

CANDIDATES = 16               # gold pairs read per search (the page may not be able to show some)
HOUSEKEEPING = 0.05           # share of new leases that also delete every expired lease
CLIENT_CLOCK_SLACK = dt.timedelta(days=1)  # an answer time further back than this is the client's clock


@dataclass(frozen=True)
class Policy:
    lease_s: float = 600.0    # how long an item stays with the rater it was handed to
    gold_every: int = 10      # one gold item in this many pairs shown (0: none)


@dataclass(frozen=True)
class Item:
    """A pair to show a rater, in the context of the queue it is served for."""

    queue_id: int
    queue: str
    filter: str
    uid: str
    dataset: Optional[str]
    position: Optional[int]   # in the queue; None for a gold item
    gold: bool = False        # never sent to the page


@dataclass(frozen=True)
class PageAnswer:
    """A keypress as the page sends it: `client_id` is the page's id for it (a resend is stored once)."""

    client_id: str
    uid: str
    filter: str
    answer: str
    queue_id: int
    created: Optional[dt.datetime] = None   # the key's time on the client (clamped to the server's)
    answer_ms: Optional[int] = None         # how long the pair was shown before the key


@dataclass(frozen=True)
class QueueProgress:
    queue: QueueInfo
    mine: int                 # the rater's labels in force for this queue


class NotServed(sh.UserError):
    """An answer for a pair the queue does not hold and that is no gold item of its filter."""


# ---------------------------------------------------------------- the next item

def _mine(rater_id: int):
    """EXISTS: the rater has a label in force for this queue item's pair and filter (correlated).

    `rater_id + 0` keeps SQLite on the (filter, uid) index: on the rater index it would read every
    label of the rater for every item it looks at."""
    return sa.exists().where(labels.c.uid == queue_items.c.uid, labels.c.filter == queues.c.filter,
                             (labels.c.rater_id + 0) == rater_id, labels.c.undone_at.is_(None))


def _taken(rater_id: int, now: dt.datetime):
    """Raters who answered this item plus other raters' live leases on it (correlated)."""
    answered = (sa.select(sa.func.count(sa.distinct(labels.c.rater_id)))
                .where(labels.c.uid == queue_items.c.uid, labels.c.filter == queues.c.filter,
                       labels.c.undone_at.is_(None)).scalar_subquery())
    leased = (sa.select(sa.func.count()).select_from(leases)
              .where(leases.c.queue_item_id == queue_items.c.id, leases.c.expires_at > now,
                     leases.c.rater_id != rater_id).scalar_subquery())
    return answered + leased


def _items_query():
    return (sa.select(queue_items.c.id.label("item_id"), queue_items.c.uid, queue_items.c.position,
                      queues.c.id.label("queue_id"), queues.c.name, queues.c.filter, queues.c.dataset)
            .select_from(queue_items.join(queues, queues.c.id == queue_items.c.queue_id))
            .order_by(queue_items.c.queue_id, queue_items.c.position))  # the (queue_id, position) index


def _item(row, gold: bool = False) -> Item:
    return Item(queue_id=row.queue_id, queue=row.name, filter=row.filter, uid=row.uid, dataset=row.dataset,
                position=None if gold else row.position, gold=gold)


# The statements of the hot path are built once, with parameters: building SQLAlchemy expressions
# anew on every keypress cost more CPU than running them.
RATER, NOW = sa.bindparam("rater"), sa.bindparam("now", type_=UtcDateTime)


@functools.cache
def _open_query(by_queue: bool):
    query = _items_query().where(~_mine(RATER), _taken(RATER, NOW) < queues.c.labels_per_item).limit(1)
    return query.where(queue_items.c.queue_id == sa.bindparam("queue")) if by_queue else query


@functools.cache
def _held_query(by_queue: bool):
    query = (_items_query().add_columns(leases.c.expires_at)
             .join(leases, leases.c.queue_item_id == queue_items.c.id)
             .where(leases.c.rater_id == RATER, leases.c.expires_at > NOW, ~_mine(RATER)).limit(1))
    return query.where(queue_items.c.queue_id == sa.bindparam("queue")) if by_queue else query


@functools.cache
def _lease_statements():
    item = sa.bindparam("item")
    return (leases.delete().where(leases.c.expires_at <= NOW),  # housekeeping, by the expiry index
            leases.delete().where(leases.c.queue_item_id == item, leases.c.rater_id == RATER),
            leases.insert().values(queue_item_id=item, rater_id=RATER,
                                   expires_at=sa.bindparam("expires", type_=UtcDateTime)))


@functools.cache
def _gold_queries():
    shown = sa.select(sa.func.count()).select_from(labels).where(
        labels.c.rater_id == RATER, labels.c.source == "page", labels.c.undone_at.is_(None))
    answered = sa.exists().where(labels.c.uid == gold_items.c.uid, labels.c.filter == gold_items.c.filter,
                                 (labels.c.rater_id + 0) == RATER, labels.c.undone_at.is_(None))
    open_gold = (sa.select(gold_items.c.uid).where(gold_items.c.filter == sa.bindparam("filter"), ~answered)
                 .order_by(gold_items.c.id).limit(CANDIDATES))
    return shown, open_gold


def _params(rater_id: int, now: dt.datetime, queue_id: Optional[int]) -> dict:
    return {"rater": rater_id, "now": now, **({"queue": queue_id} if queue_id is not None else {})}


def _open(conn: sa.Connection, rater_id: int, queue_id: Optional[int], now: dt.datetime):
    """The first item in queue order the rater may take: not answered by them, fewer than k taken."""
    return conn.execute(_open_query(queue_id is not None), _params(rater_id, now, queue_id)).first()


def _held(conn: sa.Connection, rater_id: int, queue_id: Optional[int], now: dt.datetime):
    """The rater's live lease on an item they have not answered (first in queue order), with its expiry."""
    return conn.execute(_held_query(queue_id is not None), _params(rater_id, now, queue_id)).first()


def _lease(conn: sa.Connection, item_id: int, rater_id: int, now: dt.datetime, policy: Policy) -> None:
    expired, old, insert = _lease_statements()
    if random.random() < HOUSEKEEPING:  # expired leases count for nothing; clearing them now and then is enough
        conn.execute(expired, {"now": now})
    conn.execute(old, {"item": item_id, "rater": rater_id})
    conn.execute(insert, {"item": item_id, "rater": rater_id, "expires": now + dt.timedelta(seconds=policy.lease_s)})


def _gold_due(conn: sa.Connection, rater_id: int, filter_name: str, policy: Policy,
              can_show: Callable[[str], bool]) -> Optional[str]:
    """A gold pair of `filter_name` the rater has not answered, when their next pair is a gold one."""
    if policy.gold_every <= 0:
        return None
    shown, open_gold = _gold_queries()
    if conn.scalar(shown, {"rater": rater_id}) % policy.gold_every != policy.gold_every - 1:
        return None
    for uid in conn.scalars(open_gold, {"rater": rater_id, "filter": filter_name}):
        if can_show(uid):
            return uid
    return None


def _next_in(conn: sa.Connection, rater: Rater, policy: Policy, queue_id: Optional[int],
             can_show: Callable[[str], bool], now: dt.datetime) -> Optional[Item]:
    """next_item inside the caller's write transaction (which holds the write lock on SQLite)."""
    held = _held(conn, rater.id, queue_id, now)
    if held is not None:
        if held.expires_at - now < dt.timedelta(seconds=policy.lease_s / 2):  # still at it: renew
            _lease(conn, held.item_id, rater.id, now, policy)
        return _item(held)
    row = _open(conn, rater.id, queue_id, now)
    if row is None:
        return None
    gold = _gold_due(conn, rater.id, row.filter, policy, can_show)
    if gold is not None:
        return replace(_item(row), uid=gold, position=None, gold=True)
    if queue_id is not None:  # a rater who moved to another queue gives back what they held elsewhere
        conn.execute(_submit_statements()[2], {"rater": rater.id, "queue": queue_id})
    _lease(conn, row.item_id, rater.id, now, policy)
    return _item(row)


def next_item(store: LabelStore, rater: Rater, policy: Policy, *, queue_id: Optional[int] = None,
              can_show: Callable[[str], bool] = lambda uid: True, now: Optional[dt.datetime] = None) -> Optional[Item]:
    """The pair `rater` labels next (of one queue, or of the oldest queue with work for them), leased to
    them; a gold item when one is due (`can_show` says which gold pairs the page can show); None when
    no item is left for them. One write transaction: the search and the lease are one step, so raters
    asking at once never take the same last place of an item."""
    with store.write() as conn:
        return _next_in(conn, rater, policy, queue_id, can_show, now or utc_now())


# ---------------------------------------------------------------- answers and undo

def _answer_time(created: Optional[dt.datetime], now: dt.datetime) -> dt.datetime:
    """The client's time of the key, unless its clock is ahead of ours or implausibly far behind."""
    if created is None or created.tzinfo is None or created > now or now - created > CLIENT_CLOCK_SLACK:
        return now
    return created


@functools.cache
def _submit_statements():
    queue = sa.bindparam("queue")
    return (sa.select(queue_items.c.id, queues.c.dataset)
            .select_from(queue_items.join(queues, queues.c.id == queue_items.c.queue_id))
            .where(queues.c.id == queue, queue_items.c.uid == sa.bindparam("uid"),
                   queues.c.filter == sa.bindparam("filter")),
            leases.delete().where(leases.c.queue_item_id == sa.bindparam("item"), leases.c.rater_id == RATER),
            leases.delete().where(leases.c.rater_id == RATER, leases.c.queue_item_id.in_(
                sa.select(queue_items.c.id).where(queue_items.c.queue_id != queue))))


def _submit_in(conn: sa.Connection, rater: Rater, answer: PageAnswer, now: dt.datetime) -> bool:
    in_queue, release, _ = _submit_statements()  # a resend passes the same checks; insert_labels skips it
    item = conn.execute(in_queue, {"queue": answer.queue_id, "uid": answer.uid, "filter": answer.filter}).first()
    if item is None:
        dataset = conn.scalar(sa.select(queues.c.dataset).where(queues.c.id == answer.queue_id))
        gold = conn.execute(sa.select(gold_items.c.id).where(gold_items.c.filter == answer.filter,
                                                             gold_items.c.uid == answer.uid)).first()
        if gold is None:
            raise NotServed(f"label: pair {answer.uid} is not in queue {answer.queue_id} for "
                            f"{answer.filter!r} (nor a gold item of it)")
    else:
        dataset = item.dataset
        conn.execute(release, {"item": item.id, "rater": rater.id})
    label = NewLabel(uid=answer.uid, filter=answer.filter, answer=answer.answer, rater=rater.name, source="page",
                     client_id=answer.client_id, created=_answer_time(answer.created, now), dataset=dataset,
                     queue_id=answer.queue_id, answer_ms=answer.answer_ms)
    stored, _ = insert_labels(conn, [label], rater_ids={rater.name: rater.id})
    return stored == 1


def _checked(answer: PageAnswer, rater: Rater) -> None:
    check_label(NewLabel(uid=answer.uid, filter=answer.filter, answer=answer.answer, rater=rater.name,
                         client_id=answer.client_id, answer_ms=answer.answer_ms), "label")


def submit(store: LabelStore, rater: Rater, answer: PageAnswer) -> bool:
    """Store the answer (True) or find it stored already under its client id (False, a resend), and
    release the rater's lease on the item, in one write transaction. NotServed when the pair is neither
    an item of the queue nor a gold item of its filter."""
    _checked(answer, rater)

    def write() -> bool:
        with store.write() as conn:
            return _submit_in(conn, rater, answer, utc_now())

    return retry_integrity(write)


def answer_and_next(store: LabelStore, rater: Rater, answer: PageAnswer, policy: Policy, *,
                    queue_id: Optional[int] = None,
                    can_show: Callable[[str], bool] = lambda uid: True) -> tuple[bool, Optional[Item]]:
    """submit, then next_item (of `queue_id`, else of any queue once that one has nothing left for the
    rater), in one write transaction: what the page does on each keypress."""
    _checked(answer, rater)

    def write():
        now = utc_now()
        with store.write() as conn:
            stored = _submit_in(conn, rater, answer, now)
            item = _next_in(conn, rater, policy, queue_id, can_show, now)
            if item is None and queue_id is not None:
                item = _next_in(conn, rater, policy, None, can_show, now)
            return stored, item

    return retry_integrity(write)


def take_back(store: LabelStore, rater: Rater, label_id: int, policy: Policy) -> Optional[Item]:
    """After `rater` undid label `label_id`: the pair to show them again, leased to them (whatever k says:
    it was theirs); None when the label came from no queue (an import)."""
    now = utc_now()
    with store.write() as conn:
        row = conn.execute(sa.select(labels.c.uid, labels.c.filter, labels.c.queue_id)
                           .where(labels.c.id == label_id)).first()
        if row is None or row.queue_id is None:
            return None
        found = conn.execute(_items_query().where(queues.c.id == row.queue_id, queue_items.c.uid == row.uid)).first()
        if found is not None:
            _lease(conn, found.item_id, rater.id, now, policy)
            return _item(found)
        queue = conn.execute(sa.select(queues.c.id.label("queue_id"), queues.c.name, queues.c.filter,
                                       queues.c.dataset).where(queues.c.id == row.queue_id)).first()
        if queue is None:
            return None
        return Item(queue_id=queue.queue_id, queue=queue.name, filter=row.filter, uid=row.uid,
                    dataset=queue.dataset, position=None, gold=True)


def progress(store: LabelStore, rater: Rater) -> list[QueueProgress]:
    """Every queue's items and answered count (k raters each), with the rater's own labels in it."""
    with store.read() as conn:
        summaries = queue_summaries(conn)
        mine = dict(conn.execute(sa.select(labels.c.queue_id, sa.func.count())
                                 .where(labels.c.rater_id == rater.id, labels.c.undone_at.is_(None),
                                        labels.c.queue_id.is_not(None))
                                 .group_by(labels.c.queue_id)).all())
    return [QueueProgress(queue=q, mine=int(mine.get(q.id, 0))) for q in summaries]
