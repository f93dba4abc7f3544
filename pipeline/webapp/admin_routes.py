"""The admin page's API (admin sign-in only): an overview of queues, raters, agreement and gold accuracy;
new queues (random, CLIP text search, active learning from the current filters); exports."""
from __future__ import annotations

import io
import os
import tempfile
from typing import Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

import shards as sh
from filtering.labels.quality import agreement, answer_times, gold_accuracy
from pipeline.webapp.sessions import Session, admin, context, posted_by_admin

router = APIRouter()
EXPORT_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class NewQueue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "search", "active"]
    filter: str = Field(min_length=1, max_length=32)
    n: int = Field(ge=1, le=100_000)
    labels_per_item: int = Field(1, ge=1, le=20)
    query: Optional[str] = Field(None, max_length=300)
    seed: Optional[int] = None
    name: Optional[str] = Field(None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _queue_json(q) -> dict:
    return {"id": q.id, "name": q.name, "filter": q.filter, "kind": q.kind, "query": q.query, "picked_by": q.picked_by,
            "items": q.items, "answered": q.answered, "labels_per_item": q.labels_per_item,
            "created": q.created.isoformat(timespec="seconds")}


@router.get("/api/admin/overview")
def overview(request: Request, _: Session = Depends(admin)) -> dict:
    ctx = context(request)
    store = ctx.store
    gold = {}
    for score in gold_accuracy(store):
        gold.setdefault(score.rater, []).append({"filter": score.filter, "answered": score.answered,
                                                 "correct": score.correct})
    times = {t.rater: t for t in answer_times(store)}
    raters = [{"name": r.name, "admin": r.is_admin, "revoked": r.revoked,
               "labels": times[r.name].labels if r.name in times else 0,
               "median_s": times[r.name].median_s if r.name in times else None, "gold": gold.get(r.name, [])}
              for r in store.raters()]
    agreements = []
    for name in store.filters():
        a = agreement(store, name)
        agreements.append({"filter": name, "items": a.items, "raters": a.raters, "fleiss": a.fleiss,
                           "pairs": [{"a": p.rater_a, "b": p.rater_b, "shared": p.shared, "kappa": p.kappa}
                                     for p in a.pairs]})
    from filtering.labels.gold import list_gold

    gold_counts: dict[str, int] = {}
    for item in list_gold(store):
        gold_counts[item.filter] = gold_counts.get(item.filter, 0) + 1
    settings = ctx.settings
    return {"queues": [_queue_json(q) for q in store.queues()], "raters": raters, "agreement": agreements,
            "gold": gold_counts, "dataset": settings.dataset, "filters": settings.filters,
            "can": {"random": bool(settings.dataset), "search": bool(settings.dataset),
                    "active": bool(settings.dataset and settings.filters)}}


@router.post("/api/admin/queues")
def new_queue(body: NewQueue, request: Request, session: Session = Depends(posted_by_admin)) -> dict:
    from filtering.filter_files import check_filter_name
    from filtering.labels import pickers

    ctx = context(request)
    dataset, store, quiet = ctx.settings.dataset, ctx.store, io.StringIO()
    if not dataset:
        raise HTTPException(409, "no dataset to pick pairs from: start glide serve with --dataset DATASET_EMB")
    try:
        name = check_filter_name(body.filter, "filter")
        common = {"name": body.name, "labels_per_item": body.labels_per_item, "stream": quiet}
        if body.kind == "random":
            queue = pickers.queue_random(store, dataset, name, body.n, seed=body.seed, **common)
        elif body.kind == "search":
            if not (body.query or "").strip():
                raise HTTPException(422, "a search queue needs a query")
            encode_text, described = ctx.text_encoder(dataset)
            queue = pickers.queue_search(store, dataset, name, body.query, body.n, encode_text, model=described,
                                         **common)
        else:
            if not ctx.settings.filters:
                raise HTTPException(409, "no current filters: start glide serve with --filters FILTERS")
            queue = pickers.queue_active(store, dataset, name, ctx.settings.filters, body.n, **common)
    except sh.UserError as e:
        raise HTTPException(422, str(e)) from None
    if queue is None:
        raise HTTPException(409, f"no pair of the dataset is left unlabelled and unqueued for {name}")
    return {"queue": _queue_json(queue), "by": session.rater.name}


@router.get("/api/admin/export")
def export(request: Request, filter: Optional[str] = None, skips: bool = False,
           format: Literal["csv", "parquet"] = "csv", _: Session = Depends(admin)) -> Response:
    """Every rater's current answers as a labels file (what `glide label export` writes)."""
    from filtering.filter_files import check_filter_name
    from filtering.labels.label_files import write_labels_file

    try:
        name = check_filter_name(filter, "filter") if filter else None
    except sh.UserError as e:
        raise HTTPException(422, str(e)) from None
    answers = context(request).store.answers(name, skips=skips)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"labels.{format}")
        write_labels_file(path, answers)
        with open(path, "rb") as f:
            data = f.read()
    filename = f"labels-{name or 'all'}.{format}"
    return Response(data, media_type=EXPORT_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
