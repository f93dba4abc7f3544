"""Answers from a sample world's ground truth, so the labelling loop runs unattended (demo, tests).

A world's rows map to dataset pairs through the crawl input: WORLD/urls.parquet (url, caption,
image_id) gives each image's pair uid, shards.compute_uid(url, caption), as the ingest stage computes
it; WORLD/truth.parquet (image_id, and one bool column per category) gives the answers. Read with
pyarrow alone: `filtering` may not import the world's generator in `pipeline`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import shards as sh

TRUTH_FILE, URLS_FILE = "truth.parquet", "urls.parquet"
CATEGORIES = ("people", "violence", "hate")  # the world's truth columns (pipeline.sample_world.CATEGORIES)


def _read(path: Path, columns: list[str], hint: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise sh.UserError(f"{path}: not found ({hint})")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise sh.UserError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise sh.UserError(f"{path}: no column {missing[0]!r}")
    return pq.read_table(path, columns=columns)


def world_answers(world_dir: str, filters: list[str]) -> dict[str, dict[str, bool]]:
    """{filter: {uid: truth}} for every image of the world the crawl list names."""
    root = Path(world_dir)
    if not root.is_dir():
        raise sh.UserError(f"{world_dir}: no sample world folder there")
    urls = _read(root / URLS_FILE, ["url", "caption", "image_id"],
                 "the crawl list of the served world: glide sample-world writes it with the server's address")
    truth = _read(root / TRUTH_FILE, ["image_id", *filters], "glide sample-world -o DIR writes it")
    by_image = {name: dict(zip(truth.column("image_id").to_pylist(), truth.column(name).to_pylist()))
                for name in filters}
    answers: dict[str, dict[str, bool]] = {name: {} for name in filters}
    for url, caption, image_id in zip(*(urls.column(c).to_pylist() for c in ("url", "caption", "image_id"))):
        if image_id is None:  # the list's deliberately bad rows: no image, no truth
            continue
        uid = sh.compute_uid(url, caption)
        for name in filters:
            value = by_image[name].get(image_id)
            if value is not None:
                answers[name][uid] = bool(value)
    return answers


def answer_from_world(store, world_dir: str, *, queue: Optional[str] = None, filter_name: Optional[str] = None,
                      uids: Optional[list[str]] = None) -> dict:
    """Store the world's answers, as rater "ground-truth", for the pending queue items (of `queue` or
    `filter_name`, or all), or for `uids` (with `filter_name`, or every category). Returns
    {"stored", "duplicates", "not_in_world"}: pairs the world does not know (the crawl list's bad rows)
    stay unanswered. Rerunning stores nothing twice (each answer's client id names pair and filter)."""
    from filtering.labels.raters import GROUND_TRUTH_RATER
    from filtering.labels.store import NewLabel

    if uids is not None:
        names = [filter_name] if filter_name else list(CATEGORIES)
        wanted = [(uid, name, None, None) for uid in uids for name in names]
    else:
        wanted = [(p.uid, p.filter, p.dataset, p.queue_id)
                  for p in store.pending(queue=queue, filter_name=filter_name)]
    answers = world_answers(world_dir, sorted({name for _, name, _, _ in wanted}))
    new, missing = [], 0
    for uid, name, dataset, queue_id in wanted:
        truth = answers[name].get(uid)
        if truth is None:
            missing += 1
            continue
        new.append(NewLabel(uid=uid, filter=name, answer="yes" if truth else "no", rater=GROUND_TRUTH_RATER,
                            source="ground_truth", client_id=f"ground-truth:{name}:{uid}", dataset=dataset,
                            queue_id=queue_id))
    result = store.add_labels(new, where=f"{world_dir}")
    return {"stored": result.stored, "duplicates": result.duplicates, "not_in_world": missing}
