"""The comparison page's API: the next pair of images, votes (idempotent by the page's client id), undo,
progress, the images by pair id; and the admin's view of the runs and the rater checks.

Model identity stays on the server: what a rater's page gets names a pair by its id and its images by
(pair id, side), never a setting or a path; a vote says which side won and the server, which knows what
it put where, turns that into model_a / model_b. Only the admin's overview names the settings.
"""
from __future__ import annotations

import datetime as dt
import io
from typing import Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

import shards as sh
from evaluation import comparison_store as cs
from evaluation.pairs import QUESTIONS, image_path
from pipeline.webapp.sessions import Session, admin, context, posted, signed_in

router = APIRouter()
CLIENT_ID = r"^[A-Za-z0-9_-]{8,100}$"
MAX_ID = 2 ** 62


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Vote(Body):
    client_id: str = Field(pattern=CLIENT_ID)
    pair_id: int = Field(ge=1, le=MAX_ID)
    choice: Literal["left", "right", "tie", "both_bad"]
    created: Optional[dt.datetime] = None      # the key's time on the client
    run: Optional[int] = Field(None, ge=1, le=MAX_ID)   # the run the page works on (for the next pair)


class Undo(Body):
    client_id: str = Field(pattern=CLIENT_ID)
    run: Optional[int] = Field(None, ge=1, le=MAX_ID)


def _lease_s(request: Request) -> float:
    return context(request).settings.lease_s


def pair_json(pair: Optional[cs.Pair]) -> Optional[dict]:
    """What a rater's page may know of a pair: no setting, no path, not whether it is a check."""
    if pair is None:
        return None
    return {"id": pair.id, "run": pair.run_id, "question": pair.question, "question_text": QUESTIONS[pair.question],
            "caption": pair.prompt, "left": f"/compare/image/{pair.id}/left",
            "right": f"/compare/image/{pair.id}/right"}


def _next(request: Request, session: Session, run: Optional[int]) -> Optional[dict]:
    store = context(request).store
    pair = cs.next_pair(store, session.rater.id, run_id=run, lease_s=_lease_s(request))
    if pair is None and run is not None:   # this run is done for them: go on with any other
        pair = cs.next_pair(store, session.rater.id, lease_s=_lease_s(request))
    return pair_json(pair)


@router.get("/api/compare/next")
def get_next(request: Request, run: Optional[int] = None, session: Session = Depends(signed_in)) -> dict:
    return {"next": _next(request, session, run)}


@router.post("/api/compare/votes")
def post_vote(body: Vote, request: Request, session: Session = Depends(posted)) -> dict:
    store = context(request).store
    created = body.created if body.created is None or body.created.tzinfo else None
    try:
        stored = cs.vote(store, session.rater.id, cs.PageVote(body.client_id, body.pair_id, body.choice, created))
    except cs.UnknownPair as e:
        raise HTTPException(404, str(e)) from None
    except cs.NotHanded as e:
        raise HTTPException(403, str(e)) from None
    except cs.AlreadyVoted as e:
        raise HTTPException(409, str(e)) from None
    return {"stored": stored, "next": _next(request, session, body.run)}


@router.post("/api/compare/undo")
def post_undo(body: Undo, request: Request, session: Session = Depends(posted)) -> dict:
    undone = cs.undo(context(request).store, session.rater.id, client_id=body.client_id, run_id=body.run,
                     lease_s=_lease_s(request))
    return {"undone": None if undone is None else {"pair_id": undone.pair_id, "choice": undone.choice},
            "next": _next(request, session, body.run)}


@router.get("/api/compare/progress")
def get_progress(request: Request, session: Session = Depends(signed_in)) -> dict:
    return {"runs": [{"id": p.run_id, "question": p.question, "question_text": QUESTIONS[p.question],
                      "comparisons": p.comparisons, "votes": p.votes, "votes_wanted": p.votes_wanted,
                      "mine": p.mine, "cap": p.cap}
                     for p in cs.progress(context(request).store, session.rater.id)]}


@router.get("/compare/image/{pair_id}/{side}")
def image(pair_id: int, side: Literal["left", "right"], request: Request,
          session: Session = Depends(signed_in)) -> Response:
    """One side's image of a pair handed to this rater: the path comes from the database, never the request;
    an obvious pair's noise is made from its stored seed."""
    store = context(request).store
    try:
        pair = cs.get_pair(store, pair_id) if 0 < pair_id < MAX_ID else None
    except cs.UnknownPair:
        pair = None
    if pair is None or not (session.rater.is_admin or cs.was_handed(store, pair.id, session.rater.id)):
        raise HTTPException(404, "no such image")
    if cs.is_noise(pair, side):
        data = noise_png(pair)
    else:
        relative = pair.image_a if side == pair.a_side else pair.image_b
        try:
            data = image_path(pair.report, relative, f"pair {pair.id}").read_bytes()
        except (sh.UserError, OSError):
            raise HTTPException(404, "the image is missing from the report folder") from None
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=86400", "Content-Disposition": "inline"})


def noise_png(pair: cs.Pair) -> bytes:
    """Uniform RGB noise the size of the pair's sample, from the pair's stored seed."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(image_path(pair.report, pair.image_a, f"pair {pair.id}")) as sample:
            size = sample.size
    except (sh.UserError, OSError):
        size = (256, 256)
    pixels = np.random.default_rng(pair.noise_seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@router.get("/api/admin/compare")
def admin_overview(request: Request, _: Session = Depends(admin)) -> dict:
    """Every run (with its settings) and, per question, the rater checks and the position bias."""
    from evaluation.judgement_quality import position_bias, rater_checks
    from evaluation.judgements import read_judgements_db, select_judgements

    ctx = context(request)
    runs = cs.runs(ctx.store)
    questions = []
    for question in sorted({r.question for r in runs}):
        table = read_judgements_db(ctx.store.db)
        bias = None
        if table.num_rows and question in set(table.column("question").to_pylist()):
            bias = position_bias(select_judgements(table, "labels", question=question))
        questions.append({"question": question, "raters": [c.to_json() for c in rater_checks(ctx.store, question=question)],
                          "position_bias": bias.to_json() if bias else None})
    return {"runs": [{"id": r.id, "question": r.question, "settings": r.settings, "comparisons": r.comparisons,
                      "checks": r.checks, "votes": r.votes, "votes_wanted": r.comparisons * r.votes_per_pair,
                      "cap": r.cap_per_rater, "report": r.report} for r in runs],
            "questions": questions}
