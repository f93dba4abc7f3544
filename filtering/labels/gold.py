"""Gold items: pairs with a known answer per filter, mixed into what the labelling page shows.

    add_gold(store, [GoldItem("people", uid, True), ...])     # -> (added, already there)
    gold_from_file("gold.csv")                                # a labels file's yes/no rows
    gold_from_world("world", "dataset-emb", "people", 20)     # pairs a sample world knows, half of them yes

assignment.py serves them; quality.gold_accuracy scores each rater's answers on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import sqlalchemy as sa

import shards as sh
from filtering.filter_files import check_filter_name
from filtering.labels.schema import gold_items, utc_now
from filtering.labels.store import UID_PATTERN


@dataclass(frozen=True)
class GoldItem:
    filter: str
    uid: str
    answer: bool


def add_gold(store, items: Iterable[GoldItem], *, where: str = "gold") -> tuple[int, int]:
    """Store gold items (a pair already gold for its filter keeps its answer); (added, already there)."""
    items = list(items)
    for item in items:
        check_filter_name(item.filter, where)
        if not UID_PATTERN.match(item.uid):
            raise sh.UserError(f"{where}: uid {item.uid[:80]!r} is not a pair uid (32 lowercase hex characters)")
    with store.write() as conn:
        have = set(conn.execute(sa.select(gold_items.c.filter, gold_items.c.uid)).tuples())
        fresh = {(i.filter, i.uid): i for i in items if (i.filter, i.uid) not in have}
        if fresh:
            now = utc_now()
            conn.execute(gold_items.insert(), [{"filter": i.filter, "uid": i.uid, "answer": i.answer, "created": now}
                                               for i in fresh.values()])
    return len(fresh), len(items) - len(fresh)


def list_gold(store, filter_name: Optional[str] = None) -> list[GoldItem]:
    query = sa.select(gold_items.c.filter, gold_items.c.uid, gold_items.c.answer).order_by(gold_items.c.id)
    if filter_name is not None:
        query = query.where(gold_items.c.filter == filter_name)
    with store.read() as conn:
        return [GoldItem(r.filter, r.uid, bool(r.answer)) for r in conn.execute(query)]


def gold_from_file(path: str, filter_name: Optional[str] = None) -> list[GoldItem]:
    """The yes/no rows of a labels file (skips are no known answer); the last row for a pair wins."""
    from filtering.labels.label_files import read_labels_file

    found: dict[tuple[str, str], bool] = {}
    for label in read_labels_file(path, rater="gold"):
        if label.answer != "skip" and (filter_name is None or label.filter == filter_name):
            found[(label.filter, label.uid)] = label.answer == "yes"
    return [GoldItem(name, uid, answer) for (name, uid), answer in found.items()]


def gold_from_world(world_dir: str, dataset: str, filter_name: str, n: int, *, seed: int = 0,
                    exclude: Iterable[str] = ()) -> list[GoldItem]:
    """n pairs of `dataset` whose answer a sample world knows, half of them yes where there are enough."""
    from filtering.labels.ground_truth import world_answers

    truth = world_answers(world_dir, [filter_name])[filter_name]
    excluded = set(exclude)
    in_dataset = [uid for batch in sh.iter_record_batches(dataset, ["uid"]) for uid in batch.column(0).to_pylist()
                  if uid in truth and uid not in excluded]
    rng = np.random.default_rng(seed)
    yes = [u for u in sorted(set(in_dataset)) if truth[u]]
    no = [u for u in sorted(set(in_dataset)) if not truth[u]]
    take_yes = min(len(yes), n // 2)
    take_no = min(len(no), n - take_yes)
    take_yes = min(len(yes), n - take_no)
    picked = list(rng.permutation(yes)[:take_yes]) + list(rng.permutation(no)[:take_no])
    return [GoldItem(filter_name, str(uid), truth[str(uid)]) for uid in rng.permutation(picked)]
