"""Comparison runs in the labels database: storing `glide pairs make`'s tasks, handing pairs to raters,
their votes (one in force per rater, pair and question), undo, and progress.

    run = create_run(store, question="photorealism", report=..., settings=[...], tasks=plan, votes_per_pair=3)
    pair = next_pair(store, rater_id, run_id=run.id)            # recorded as handed to this rater
    stored = vote(store, rater_id, PageVote(client_id, pair.id, "left"))
    undo(store, rater_id, client_id="...")                      # their latest vote; the pair comes back

Handing out: a rater walks a run's pairs in position order and gets the first one that
  - is a comparison or an obvious pair still short of `votes_per_pair` raters (a rater counts once they
    voted, or while the pair they were handed has not expired: `lease_s`), so every rater meets the
    obvious pairs at about the rate `glide pairs make` mixed them in, or
  - duplicates a pair this rater has voted on (only they can contradict themselves),
and that they have not been handed before, unless they reached the run's per-rater cap. A pair handed and
not voted on (a reload, an undo) is theirs to answer first. A vote is stored only for a pair handed to
that rater; a second vote on it is refused (and the partial unique index on judgements refuses it even
if two requests race); the vote's client id makes a resend store nothing.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence

import sqlalchemy as sa

from evaluation.pairs import NOISE_MODEL, PairTask
from filtering.labels.schema import (comparison_assignments, comparison_pairs, comparison_runs, judgements,
                                     utc_now)

DEFAULT_LEASE_S = 600.0
CHOICES = ("left", "right", "tie", "both_bad")
CLOCK_SKEW = dt.timedelta(minutes=5)     # a client time further off than this is replaced by ours
OLDEST_CLIENT_TIME = dt.timedelta(days=2)


class UnknownPair(LookupError):
    """No such pair (or run)."""


class NotHanded(PermissionError):
    """The pair was not handed to this rater."""


class AlreadyVoted(RuntimeError):
    """This rater's vote on this pair is already in force."""


@dataclass(frozen=True)
class RunInfo:
    id: int
    question: str
    report: str
    settings: list
    votes_per_pair: int
    cap_per_rater: Optional[int]
    params: dict
    created: dt.datetime
    comparisons: int      # pairs of kind compare
    checks: int           # duplicate and obvious pairs
    votes: int            # votes in force on its comparisons


@dataclass(frozen=True)
class Pair:
    """A pair as stored (settings included: for the server, never for a rater's page)."""

    id: int
    run_id: int
    position: int
    kind: str
    duplicate_of: Optional[int]
    prompt: str
    seed: int
    model_a: str
    model_b: str
    image_a: str
    image_b: Optional[str]
    a_side: str
    noise_seed: Optional[int]
    question: str
    report: str


@dataclass(frozen=True)
class PageVote:
    client_id: str
    pair_id: int
    choice: str                          # left / right / tie / both_bad
    created: Optional[dt.datetime] = None


@dataclass(frozen=True)
class Undone:
    pair_id: int
    choice: str


def winner_of(choice: str, a_side: str) -> str:
    """The judgement's winner (a / b / tie / both_bad) for the side the rater chose."""
    if choice in ("tie", "both_bad"):
        return choice
    return "a" if choice == a_side else "b"


def choice_of(winner: str, a_side: str) -> str:
    if winner in ("tie", "both_bad"):
        return winner
    return a_side if winner == "a" else ("right" if a_side == "left" else "left")


# ---------------------------------------------------------------------------------------------- runs
def create_run(store, *, question: str, report: str, settings: Sequence[str], tasks: Sequence[PairTask],
               votes_per_pair: int, cap_per_rater: Optional[int] = None, params: Optional[dict] = None) -> RunInfo:
    """Store a run and its pairs in one transaction (a duplicate's `duplicate_of`: its original's position)."""
    with store.write() as conn:
        run_id = conn.execute(comparison_runs.insert().values(
            question=question, report=report, settings=list(settings), votes_per_pair=votes_per_pair,
            cap_per_rater=cap_per_rater, params=params or {}, created=utc_now())).inserted_primary_key[0]
        ids: dict[int, int] = {}
        for position, t in enumerate(tasks):   # originals come first, so their ids are known
            ids[position] = conn.execute(comparison_pairs.insert().values(
                run_id=run_id, position=position, kind=t.kind,
                duplicate_of=ids[t.duplicate_of] if t.duplicate_of is not None else None,
                prompt_index=t.prompt_index, prompt=t.prompt, seed=t.seed, model_a=t.model_a, model_b=t.model_b,
                image_a=t.image_a, image_b=t.image_b, a_side=t.a_side,
                noise_seed=t.noise_seed)).inserted_primary_key[0]
    return get_run(store, run_id)


def _run_infos(conn, where=None) -> list[RunInfo]:
    p = comparison_pairs
    compare = sa.func.sum(sa.case((p.c.kind == "compare", 1), else_=0))
    counts = (sa.select(p.c.run_id, compare.label("comparisons"), (sa.func.count() - compare).label("checks"))
              .group_by(p.c.run_id).subquery())
    votes = (sa.select(p.c.run_id, sa.func.count().label("votes"))
             .select_from(judgements.join(p, judgements.c.comparison_pair_id == p.c.id))
             .where(judgements.c.undone_at.is_(None), judgements.c.check_kind.is_(None))
             .group_by(p.c.run_id).subquery())
    r = comparison_runs
    query = (sa.select(r, counts.c.comparisons, counts.c.checks, votes.c.votes)
             .outerjoin(counts, counts.c.run_id == r.c.id).outerjoin(votes, votes.c.run_id == r.c.id)
             .order_by(r.c.id))
    if where is not None:
        query = query.where(where)
    return [RunInfo(id=row.id, question=row.question, report=row.report, settings=list(row.settings),
                    votes_per_pair=row.votes_per_pair, cap_per_rater=row.cap_per_rater, params=row.params or {},
                    created=row.created, comparisons=int(row.comparisons or 0), checks=int(row.checks or 0),
                    votes=int(row.votes or 0)) for row in conn.execute(query)]


def runs(store) -> list[RunInfo]:
    with store.read() as conn:
        return _run_infos(conn)


def get_run(store, run_id: int) -> RunInfo:
    with store.read() as conn:
        found = _run_infos(conn, comparison_runs.c.id == run_id)
    if not found:
        raise UnknownPair(f"no comparison run {run_id}")
    return found[0]


# ---------------------------------------------------------------------------------------------- pairs
_PAIR_COLUMNS = [comparison_pairs, comparison_runs.c.question, comparison_runs.c.report]


def _pair(row) -> Pair:
    return Pair(id=row.id, run_id=row.run_id, position=row.position, kind=row.kind, duplicate_of=row.duplicate_of,
                prompt=row.prompt, seed=row.seed, model_a=row.model_a, model_b=row.model_b, image_a=row.image_a,
                image_b=row.image_b, a_side=row.a_side, noise_seed=row.noise_seed, question=row.question,
                report=row.report)


def _pairs_query():
    return sa.select(*_PAIR_COLUMNS).join(comparison_runs, comparison_runs.c.id == comparison_pairs.c.run_id)


def get_pair(store, pair_id: int) -> Pair:
    with store.read() as conn:
        row = conn.execute(_pairs_query().where(comparison_pairs.c.id == pair_id)).first()
    if row is None:
        raise UnknownPair(f"no comparison pair {pair_id}")
    return _pair(row)


def _voted(rater_id, pair_key):
    """A vote of `rater_id` in force on the pair whose judgements.pair_id is `pair_key`."""
    return (sa.select(judgements.c.id).where(judgements.c.rater_id == rater_id, judgements.c.pair_id == pair_key,
                                             judgements.c.undone_at.is_(None)).exists())


def _my_votes(conn, rater_id: int, run_id: int) -> int:
    return conn.scalar(sa.select(sa.func.count()).select_from(
        judgements.join(comparison_pairs, judgements.c.comparison_pair_id == comparison_pairs.c.id))
        .where(comparison_pairs.c.run_id == run_id, judgements.c.rater_id == rater_id,
               judgements.c.undone_at.is_(None)))


def next_pair(store, rater_id: int, *, run_id: Optional[int] = None,
              lease_s: float = DEFAULT_LEASE_S) -> Optional[Pair]:
    """The pair `rater_id` answers next (in run `run_id`, or the first run with one for them), recorded as
    handed to them; None when there is none (every run done for them, or their cap reached)."""
    p, a = comparison_pairs, comparison_assignments
    now = utc_now()
    with store.write() as conn:
        mine = sa.select(a.c.pair_id).where(a.c.rater_id == rater_id, ~a.c.voted)
        pending = (_pairs_query().where(p.c.id.in_(mine))
                   .order_by(p.c.run_id, p.c.position).limit(1))
        if run_id is not None:
            pending = pending.where(p.c.run_id == run_id)
        row = conn.execute(pending).first()
        if row is not None:
            conn.execute(a.update().where(a.c.pair_id == row.id, a.c.rater_id == rater_id)
                         .values(expires_at=now + dt.timedelta(seconds=lease_s)))
            return _pair(row)
        runs_query = sa.select(comparison_runs.c.id, comparison_runs.c.votes_per_pair,
                               comparison_runs.c.cap_per_rater).order_by(comparison_runs.c.id)
        if run_id is not None:
            runs_query = runs_query.where(comparison_runs.c.id == run_id)
        for run in conn.execute(runs_query).all():
            if run.cap_per_rater is not None and _my_votes(conn, rater_id, run.id) >= run.cap_per_rater:
                continue
            row = conn.execute(_first_open(run, rater_id, now)).first()
            if row is not None:
                conn.execute(a.insert().values(pair_id=row.id, rater_id=rater_id, served=now,
                                               expires_at=now + dt.timedelta(seconds=lease_s)))
                return _pair(row)
    return None


def _first_open(run, rater_id: int, now: dt.datetime):
    p, a = comparison_pairs, comparison_assignments
    other = a.alias("other")
    holding = (sa.select(sa.func.count()).select_from(other)
               .where(other.c.pair_id == p.c.id, sa.or_(other.c.voted, other.c.expires_at > now))
               .scalar_subquery())
    handed = sa.select(a.c.id).where(a.c.pair_id == p.c.id, a.c.rater_id == rater_id).exists()
    voted_original = sa.select(a.c.id).where(a.c.pair_id == p.c.duplicate_of, a.c.rater_id == rater_id,
                                             a.c.voted).exists()
    return (_pairs_query()
            .where(p.c.run_id == run.id, ~handed,
                   sa.or_(sa.and_(p.c.kind.in_(("compare", "obvious")), holding < run.votes_per_pair),
                          sa.and_(p.c.kind == "duplicate", voted_original)))
            .order_by(p.c.position).limit(1))


# ---------------------------------------------------------------------------------------------- votes
def _client_time(created: Optional[dt.datetime], now: dt.datetime) -> dt.datetime:
    """The key's time on the client when it is believable (a retry arrives late), else ours."""
    if created is None or created.tzinfo is None:
        return now
    if now - OLDEST_CLIENT_TIME <= created <= now + CLOCK_SKEW:
        return min(created, now)
    return now


def vote(store, rater_id: int, v: PageVote) -> bool:
    """Store `v` (True), or find it stored already under its client id (False: a resend)."""
    if v.choice not in CHOICES:
        raise ValueError(f"choice {v.choice!r} is not one of {', '.join(CHOICES)}")
    with store.write() as conn:
        done = conn.execute(sa.select(judgements.c.rater_id, judgements.c.pair_id)
                            .where(judgements.c.client_id == v.client_id)).first()
        if done is not None:
            if done.rater_id != rater_id or done.pair_id != str(v.pair_id):
                raise AlreadyVoted("this client id was used for another vote")
            return False
        row = conn.execute(_pairs_query().where(comparison_pairs.c.id == v.pair_id)).first()
        if row is None:
            raise UnknownPair(f"no comparison pair {v.pair_id}")
        pair = _pair(row)
        handed = conn.scalar(sa.select(comparison_assignments.c.id).where(
            comparison_assignments.c.pair_id == pair.id, comparison_assignments.c.rater_id == rater_id))
        if handed is None:
            raise NotHanded(f"pair {pair.id} was not handed to you")
        if conn.scalar(sa.select(_voted(rater_id, str(pair.id)))):
            raise AlreadyVoted(f"you have voted on pair {pair.id} already (undo it to vote again)")
        now = utc_now()
        conn.execute(judgements.insert().values(
            client_id=v.client_id, question=pair.question, pair_id=str(pair.id), model_a=pair.model_a,
            model_b=pair.model_b, winner=winner_of(v.choice, pair.a_side), a_side=pair.a_side, prompt=pair.prompt,
            seed=pair.seed, rater_id=rater_id, source="page", created=_client_time(v.created, now), stored=now,
            check_kind=None if pair.kind == "compare" else pair.kind, comparison_pair_id=pair.id))
        conn.execute(comparison_assignments.update().where(comparison_assignments.c.id == handed).values(voted=True))
    return True


def undo(store, rater_id: int, *, client_id: str, run_id: Optional[int] = None,
         lease_s: float = DEFAULT_LEASE_S) -> Optional[Undone]:
    """Undo `rater_id`'s latest vote in force (in run `run_id`): its pair is theirs to answer again. A
    resent undo (same `client_id`) reports what it undid the first time and undoes nothing more."""
    j = judgements
    with store.write() as conn:
        done = conn.execute(sa.select(j.c.pair_id, j.c.winner, j.c.a_side, j.c.rater_id)
                            .where(j.c.undo_client_id == client_id)).first()
        if done is not None:
            if done.rater_id != rater_id:
                return None
            return Undone(pair_id=int(done.pair_id), choice=choice_of(done.winner, done.a_side))
        query = (sa.select(j.c.id, j.c.pair_id, j.c.winner, j.c.a_side, j.c.comparison_pair_id)
                 .select_from(j.join(comparison_pairs, j.c.comparison_pair_id == comparison_pairs.c.id))
                 .where(j.c.rater_id == rater_id, j.c.undone_at.is_(None), j.c.source == "page")
                 .order_by(j.c.id.desc()).limit(1))
        if run_id is not None:
            query = query.where(comparison_pairs.c.run_id == run_id)
        row = conn.execute(query).first()
        if row is None:
            return None
        now = utc_now()
        conn.execute(j.update().where(j.c.id == row.id).values(undone_at=now, undo_client_id=client_id))
        conn.execute(comparison_assignments.update()   # theirs to answer again, held for them meanwhile
                     .where(comparison_assignments.c.pair_id == row.comparison_pair_id,
                            comparison_assignments.c.rater_id == rater_id)
                     .values(voted=False, expires_at=now + dt.timedelta(seconds=lease_s)))
        return Undone(pair_id=int(row.pair_id), choice=choice_of(row.winner, row.a_side))


@dataclass(frozen=True)
class RunProgress:
    run_id: int
    question: str
    comparisons: int
    votes_wanted: int      # comparisons x votes_per_pair
    votes: int             # votes in force on its comparisons, everyone's
    mine: int              # this rater's votes in force in the run (checks included)
    cap: Optional[int]


def progress(store, rater_id: int) -> list[RunProgress]:
    with store.read() as conn:
        infos = _run_infos(conn)
        return [RunProgress(run_id=r.id, question=r.question, comparisons=r.comparisons,
                            votes_wanted=r.comparisons * r.votes_per_pair, votes=r.votes,
                            mine=_my_votes(conn, rater_id, r.id), cap=r.cap_per_rater) for r in infos]


def is_noise(pair: Pair, side: str) -> bool:
    """Whether `side` of an obvious pair shows the noise."""
    return pair.model_b == NOISE_MODEL and pair.kind == "obvious" and side != pair.a_side


def was_handed(store, pair_id: int, rater_id: int) -> bool:
    with store.read() as conn:
        return conn.scalar(sa.select(comparison_assignments.c.id).where(
            comparison_assignments.c.pair_id == pair_id, comparison_assignments.c.rater_id == rater_id)) is not None
