"""The labelling page's API: sign-in, the next pair, answers (idempotent by the page's client id), undo,
progress, and images by uid.

Each answer is stored, under the client id the page generated for that keypress, before the reply
names the next pair; the page shows nothing new until that reply arrives and resends the same id
until it does, so a dropped connection or a restarted server stores the answer exactly once.
"""
from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from filtering.labels.assignment import NotServed, PageAnswer, answer_and_next, next_item, progress, take_back
from filtering.labels.pair_index import IMAGE_TYPES, UID
from pipeline.webapp.sessions import (Session, check_signin_post, context, optional_session, posted, set_session_cookie,
                                      signed_in)

router = APIRouter()
CLIENT_ID = r"^[A-Za-z0-9_-]{8,100}$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignIn(Body):
    token: str = Field(min_length=16, max_length=256)


class Answer(Body):
    client_id: str = Field(pattern=CLIENT_ID)
    uid: str = Field(pattern=UID.pattern)
    filter: str = Field(min_length=1, max_length=32)
    queue_id: int
    answer: Literal["yes", "no", "skip"]
    created: Optional[dt.datetime] = None               # the key's time on the client
    answer_ms: Optional[int] = Field(None, ge=0, le=86_400_000)
    queue: Optional[int] = None                          # the queue the page works on (for the next pair)


class Undo(Body):
    client_id: str = Field(pattern=CLIENT_ID)
    queue: Optional[int] = None


def _next(request: Request, session: Session, queue: Optional[int]) -> Optional[dict]:
    ctx = context(request)
    item = next_item(ctx.store, session.rater, ctx.policy, queue_id=queue, can_show=ctx.can_show)
    if item is None and queue is not None:  # this queue is done for them: go on with any other
        item = next_item(ctx.store, session.rater, ctx.policy, can_show=ctx.can_show)
    return ctx.item_json(item)


@router.post("/api/signin", dependencies=[Depends(check_signin_post)])
def sign_in(body: SignIn, request: Request, response: Response) -> dict:
    ctx = context(request)
    rater = ctx.store.authenticate(body.token)
    if rater is None:
        raise HTTPException(401, "this link does not sign anyone in (unknown, replaced or revoked)")
    set_session_cookie(response, body.token, ctx.settings.secure_cookies)
    return {"rater": rater.name, "admin": rater.is_admin}


@router.post("/api/signout")
def sign_out(response: Response, session: Session = Depends(posted)) -> dict:
    from pipeline.webapp.sessions import SESSION_COOKIE

    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"rater": session.rater.name}


@router.get("/api/me")
def me(session: Optional[Session] = Depends(optional_session)) -> dict:
    if session is None:
        raise HTTPException(401, "not signed in: open your sign-in link again")
    return {"rater": session.rater.name, "admin": session.rater.is_admin, "csrf": session.csrf}


@router.get("/api/next")
def get_next(request: Request, queue: Optional[int] = None, session: Session = Depends(signed_in)) -> dict:
    return {"next": _next(request, session, queue)}


@router.post("/api/labels")
def post_label(body: Answer, request: Request, session: Session = Depends(posted)) -> dict:
    ctx = context(request)
    created = body.created if body.created is None or body.created.tzinfo else None  # a naive time: ours
    answer = PageAnswer(client_id=body.client_id, uid=body.uid, filter=body.filter, answer=body.answer,
                        queue_id=body.queue_id, created=created, answer_ms=body.answer_ms)
    try:
        stored, item = answer_and_next(ctx.store, session.rater, answer, ctx.policy, queue_id=body.queue,
                                       can_show=ctx.can_show)
    except NotServed as e:
        raise HTTPException(409, str(e)) from None
    return {"stored": stored, "next": ctx.item_json(item)}


@router.post("/api/undo")
def post_undo(body: Undo, request: Request, session: Session = Depends(posted)) -> dict:
    ctx = context(request)
    undone = ctx.store.undo(session.rater.name, client_id=body.client_id)
    if undone is None:
        return {"undone": None, "next": _next(request, session, body.queue)}
    item = take_back(ctx.store, session.rater, undone.label_id, ctx.policy)
    return {"undone": {"uid": undone.uid, "filter": undone.filter, "answer": undone.answer,
                       "restored": undone.restored},
            "next": ctx.item_json(item) if item is not None else _next(request, session, body.queue)}


@router.get("/api/progress")
def get_progress(request: Request, session: Session = Depends(signed_in)) -> dict:
    return {"queues": [{"id": p.queue.id, "name": p.queue.name, "filter": p.queue.filter, "kind": p.queue.kind,
                        "items": p.queue.items, "answered": p.queue.answered,
                        "labels_per_item": p.queue.labels_per_item, "mine": p.mine}
                       for p in progress(context(request).store, session.rater)]}


@router.get("/image/{uid}")
def image(uid: str, request: Request, _: Session = Depends(signed_in)) -> Response:
    """The stored image of pair `uid`: looked up in the datasets' uid index, never a path."""
    if not UID.match(uid):
        raise HTTPException(404, "no such pair")
    pair = context(request).pairs.get(uid)
    media_type = IMAGE_TYPES.get(pair.image_format) if pair is not None else None
    if pair is None or media_type is None or not pair.image:
        raise HTTPException(404, "no such pair")
    return Response(pair.image, media_type=media_type,
                    headers={"Cache-Control": "private, max-age=86400", "Content-Disposition": "inline"})
