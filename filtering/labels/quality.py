"""Quality control of human labels: agreement between raters and accuracy on gold items.

    fleiss_kappa(counts)            items x categories count matrix -> kappa (any raters per item, >= 2)
    cohen_kappa(a, b)               two raters' answers on the same items -> kappa
    agreement(store, "people")      Fleiss' kappa over every pair two or more raters answered, and
                                    Cohen's kappa for each pair of raters on the pairs they share
    gold_accuracy(store)            per rater and filter: gold items answered, and how many right
    answer_times(store)             per rater: page labels and their median time from showing to key

Skips are no answer: they are left out of agreement and gold accuracy. A kappa is None when it is
undefined (no item shared, or every answer in one category, so chance agreement is already 1).
"""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

import sqlalchemy as sa

from filtering.labels.schema import gold_items, labels, raters

CATEGORIES = ("yes", "no")


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> Optional[float]:
    """Fleiss' kappa of an items x categories matrix of answer counts. Items may have different numbers
    of raters (each item's agreement is over its own n_i (n_i - 1) ordered pairs); items with fewer
    than two answers are left out."""
    rows = [list(map(int, r)) for r in counts if sum(r) >= 2]
    if not rows:
        return None
    total = sum(sum(r) for r in rows)
    p_category = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_items = [(sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    p_bar = sum(p_items) / len(p_items)
    p_chance = sum(p * p for p in p_category)
    if p_chance >= 1.0:
        return None
    return (p_bar - p_chance) / (1.0 - p_chance)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> Optional[float]:
    """Cohen's kappa of two raters' answers on the same items, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} answers against {len(b)}")
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    chance = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


@dataclass(frozen=True)
class PairAgreement:
    rater_a: str
    rater_b: str
    shared: int                   # pairs both answered yes or no
    kappa: Optional[float]        # Cohen's


@dataclass(frozen=True)
class Agreement:
    filter: str
    items: int                    # pairs with two or more yes/no answers
    raters: int                   # raters with an answer on one of them
    fleiss: Optional[float]
    pairs: list[PairAgreement]


def agreement(store, filter_name: str) -> Agreement:
    """Agreement of the raters' current yes/no answers for `filter_name` (see the module doc)."""
    by_uid: dict[str, dict[str, str]] = {}
    for answer in store.answers(filter_name, skips=False):
        by_uid.setdefault(answer.uid, {})[answer.rater] = answer.answer
    shared = {uid: answers for uid, answers in by_uid.items() if len(answers) >= 2}
    counts = [[sum(a == c for a in answers.values()) for c in CATEGORIES] for answers in shared.values()]
    names = sorted({r for answers in shared.values() for r in answers})
    pairs = []
    for x, y in itertools.combinations(names, 2):
        both = [(answers[x], answers[y]) for answers in shared.values() if x in answers and y in answers]
        if both:
            pairs.append(PairAgreement(x, y, len(both), cohen_kappa([p[0] for p in both], [p[1] for p in both])))
    return Agreement(filter=filter_name, items=len(shared), raters=len(names), fleiss=fleiss_kappa(counts),
                     pairs=pairs)


@dataclass(frozen=True)
class GoldScore:
    rater: str
    filter: str
    answered: int                 # gold items the rater answered yes or no
    correct: int

    @property
    def accuracy(self) -> Optional[float]:
        return self.correct / self.answered if self.answered else None


def gold_accuracy(store) -> list[GoldScore]:
    """Each rater's current yes/no answers on gold items against the known answers, per filter."""
    known = {}
    with store.read() as conn:
        for name, uid, answer in conn.execute(sa.select(gold_items.c.filter, gold_items.c.uid, gold_items.c.answer)):
            known[(name, uid)] = bool(answer)
    scores: dict[tuple[str, str], list[int]] = {}
    for answer in store.answers(skips=False):
        truth = known.get((answer.filter, answer.uid))
        if truth is None:
            continue
        tally = scores.setdefault((answer.rater, answer.filter), [0, 0])
        tally[0] += 1
        tally[1] += (answer.answer == "yes") == truth
    return [GoldScore(rater, name, n, right) for (rater, name), (n, right) in sorted(scores.items())]


@dataclass(frozen=True)
class AnswerTimes:
    rater: str
    labels: int                   # page labels in force
    median_s: Optional[float]     # median seconds from the pair shown to the key


def answer_times(store) -> list[AnswerTimes]:
    """Per rater, their page labels in force and the median time they took per label."""
    times: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    with store.read() as conn:
        for name, ms in conn.execute(sa.select(raters.c.name, labels.c.answer_ms)
                                     .join(raters, raters.c.id == labels.c.rater_id)
                                     .where(labels.c.source == "page", labels.c.undone_at.is_(None))):
            counts[name] = counts.get(name, 0) + 1
            if ms is not None:
                times.setdefault(name, []).append(ms)
    return [AnswerTimes(name, n, statistics.median(times[name]) / 1000 if name in times else None)
            for name, n in sorted(counts.items())]
