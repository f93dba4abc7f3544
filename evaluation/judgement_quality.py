"""How far to trust each rater's pairwise votes, and how much the side of the screen sways them.

    checks = rater_checks(store, question="photorealism")      # one RaterCheck per rater who voted
    [c.rater for c in checks if c.flagged]                     # -> glide elo fit --exclude-flagged
    bias = position_bias(table)                                # left wins / decisive votes, with a p-value

A rater is flagged (each reason listed) when
  obvious     more than `max_obvious_miss` of their obvious pairs (a sample against pure noise) did not
              go to the sample (noise chosen, a tie or "both bad");
  duplicates  the duplicated pairs they answered twice (the second time with sides swapped) got a
              different answer (both bad and tie count as the same answer) more often than chance
              allows: a one-sided binomial test of their changed answers against everyone else's rate of
              changing (at least RATE_FLOOR: one slip when all others were perfect is no evidence), p
              below `alpha`, from `min_duplicates` such pairs. Someone answering by position changes
              every time; someone answering at random, half the time;
  majority    on comparisons others voted on too, their decisive votes (a or b) agree with the other raters'
              majority less often than chance allows: a one-sided binomial test of their agreements
              against the rate at which everyone else agrees with their own others' majority (at most
              1 - RATE_FLOOR), p below `alpha`, from `min_majority` such votes. A rater who answers at
              random agrees about half the time; attentive raters far more often.
Only current page votes count (undone ones left out). Ties in the others' majority are left out.
The duplicates and majority p-values are Holm-adjusted across the raters tested (`*_p_holm`), so `alpha`
bounds the chance that any attentive rater is flagged by that test, not each one's: with 50 raters at
0.01 each, about one in three runs would otherwise flag someone who did nothing wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import sqlalchemy as sa

from filtering.labels.schema import comparison_pairs, comparison_runs, judgements, raters

MAX_OBVIOUS_MISS = 0.25
MIN_DUPLICATES = 2
RATE_FLOOR = 0.05
ALPHA = 0.01
MIN_MAJORITY = 8


@dataclass
class RaterCheck:
    rater: str
    votes: int = 0
    obvious: int = 0
    obvious_missed: int = 0
    duplicates: int = 0
    inconsistent: int = 0
    duplicates_expected: Optional[float] = None  # everyone else's rate of changed answers
    duplicates_p: Optional[float] = None
    duplicates_p_holm: Optional[float] = None   # adjusted across the raters with >= min_duplicates
    majority_votes: int = 0
    majority_agreed: int = 0
    majority_expected: Optional[float] = None   # everyone else's agreement rate (the test's null)
    majority_p: Optional[float] = None
    majority_p_holm: Optional[float] = None     # adjusted across the raters with >= min_majority
    flagged: list = field(default_factory=list)  # reasons: obvious / duplicates / majority

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _same(winner: str) -> str:
    return "tie" if winner == "both_bad" else winner


def _current_votes(store, question: Optional[str], run_id: Optional[int]):
    j, p = judgements, comparison_pairs
    query = (sa.select(raters.c.name.label("rater"), j.c.winner, j.c.check_kind, p.c.id.label("pair"),
                       p.c.duplicate_of, p.c.run_id)
             .select_from(j.join(p, j.c.comparison_pair_id == p.c.id)
                          .join(comparison_runs, comparison_runs.c.id == p.c.run_id)
                          .join(raters, raters.c.id == j.c.rater_id))
             .where(j.c.undone_at.is_(None), j.c.source == "page"))
    if question is not None:
        query = query.where(comparison_runs.c.question == question)
    if run_id is not None:
        query = query.where(p.c.run_id == run_id)
    with store.read() as conn:
        return conn.execute(query.order_by(j.c.id)).all()


def rater_checks(store, *, question: Optional[str] = None, run_id: Optional[int] = None,
                 max_obvious_miss: float = MAX_OBVIOUS_MISS,
                 min_duplicates: int = MIN_DUPLICATES, alpha: float = ALPHA,
                 min_majority: int = MIN_MAJORITY) -> list[RaterCheck]:
    """Each rater's checks over the comparison runs of `question` (or one run), by rater name."""
    from scipy.stats import binom

    rows = _current_votes(store, question, run_id)
    checks: dict[str, RaterCheck] = {}
    answer: dict[tuple[str, int], str] = {}          # (rater, pair) -> winner
    on_pair: dict[int, dict[str, str]] = {}          # comparison pair -> {rater: winner}
    for r in rows:
        c = checks.setdefault(r.rater, RaterCheck(r.rater))
        c.votes += 1
        answer[(r.rater, r.pair)] = r.winner
        if r.check_kind == "obvious":
            c.obvious += 1
            c.obvious_missed += r.winner != "a"      # model_a is the sample, model_b the noise
        elif r.check_kind is None:
            on_pair.setdefault(r.pair, {})[r.rater] = r.winner
    for r in rows:
        if r.check_kind == "duplicate" and (r.rater, r.duplicate_of) in answer:
            c = checks[r.rater]
            c.duplicates += 1
            c.inconsistent += _same(r.winner) != _same(answer[(r.rater, r.duplicate_of)])
    for rater, agreed, total in _majority_agreements(on_pair):
        checks[rater].majority_votes, checks[rater].majority_agreed = total, agreed
    totals = {name: (c.majority_agreed, c.majority_votes) for name, c in checks.items()}
    all_agreed, all_votes = sum(a for a, _ in totals.values()), sum(n for _, n in totals.values())
    all_changed, all_twice = sum(c.inconsistent for c in checks.values()), sum(c.duplicates for c in checks.values())
    for c in checks.values():
        if c.obvious and c.obvious_missed / c.obvious > max_obvious_miss:
            c.flagged.append("obvious")
        if c.duplicates:
            others = all_twice - c.duplicates
            rate = (all_changed - c.inconsistent) / others if others else 0.5
            c.duplicates_expected = max(rate, RATE_FLOOR)
            c.duplicates_p = float(binom.sf(c.inconsistent - 1, c.duplicates, c.duplicates_expected))
        others_votes = all_votes - c.majority_votes
        if c.majority_votes and others_votes:
            c.majority_expected = min((all_agreed - c.majority_agreed) / others_votes, 1 - RATE_FLOOR)
            c.majority_p = float(binom.cdf(c.majority_agreed, c.majority_votes, c.majority_expected))
    tested = [c for c in checks.values() if c.duplicates_p is not None and c.duplicates >= min_duplicates]
    for c, adjusted in zip(tested, holm([c.duplicates_p for c in tested])):
        c.duplicates_p_holm = adjusted
        if adjusted < alpha:
            c.flagged.append("duplicates")
    tested = [c for c in checks.values() if c.majority_p is not None and c.majority_votes >= min_majority]
    for c, adjusted in zip(tested, holm([c.majority_p for c in tested])):
        c.majority_p_holm = adjusted
        if adjusted < alpha:
            c.flagged.append("majority")
    return sorted(checks.values(), key=lambda c: c.rater)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order: reject where adjusted < alpha keeps the
    family-wise error at alpha and never rejects less than Bonferroni does."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _majority_agreements(on_pair: dict[int, dict[str, str]]):
    """(rater, agreed, counted) per rater: their decisive votes against the others' decisive majority."""
    counts: dict[str, list[int]] = {}
    for votes in on_pair.values():
        decisive = {name: w for name, w in votes.items() if w in ("a", "b")}
        for name, mine in decisive.items():
            a = sum(1 for other, w in decisive.items() if other != name and w == "a")
            b = sum(1 for other, w in decisive.items() if other != name and w == "b")
            if a == b:
                continue
            tally = counts.setdefault(name, [0, 0])
            tally[0] += mine == ("a" if a > b else "b")
            tally[1] += 1
    return [(name, agreed, total) for name, (agreed, total) in counts.items()]


def flagged_raters(store, *, question: Optional[str] = None, **thresholds) -> list[str]:
    return [c.rater for c in rater_checks(store, question=question, **thresholds) if c.flagged]


@dataclass(frozen=True)
class PositionBias:
    left_wins: int
    decisive: int          # votes with a winner and a known side
    ties: int
    p_value: float         # two-sided binomial test of left_wins against half

    @property
    def left_share(self) -> Optional[float]:
        return self.left_wins / self.decisive if self.decisive else None

    def to_json(self) -> dict:
        return {"left_wins": self.left_wins, "decisive": self.decisive, "ties": self.ties,
                "left_share": self.left_share, "p_value": self.p_value}

    def describe(self) -> str:
        if not self.decisive:
            return "position bias: no decisive votes with a known side"
        return (f"position bias: the left image won {self.left_wins} of {self.decisive} decisive votes "
                f"({100 * self.left_share:.1f}%; two-sided binomial p = {self.p_value:.3g} against 50%), "
                f"{self.ties} tied or both bad")


def position_bias(table) -> Optional[PositionBias]:
    """From a judgements table with winner and a_side (read_judgements_db's); None without a_side."""
    from scipy.stats import binomtest

    if "a_side" not in table.column_names:
        return None
    left = decisive = ties = 0
    for winner, side in zip(table.column("winner").to_pylist(), table.column("a_side").to_pylist()):
        if side not in ("left", "right"):
            continue
        if winner in ("a", "b"):
            decisive += 1
            left += (winner == "a") == (side == "left")
        else:
            ties += 1
    if decisive == 0 and ties == 0:
        return None
    p = binomtest(left, decisive, 0.5).pvalue if decisive else 1.0
    return PositionBias(left_wins=left, decisive=decisive, ties=ties, p_value=float(p))
