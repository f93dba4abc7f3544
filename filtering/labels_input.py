"""Read the human labels fit-filters learns from: a file, or the labels database.

    LABELS   a CSV, Arrow IPC (.arrow/.feather) or Parquet file with columns uid, filter, label
             (label: yes/no/skip, true/false, 1/0; as `glide label import` reads it), or a database: an SQLAlchemy URL (sqlite:///labels.db,
             postgresql://...) or a .db/.sqlite file, read through filtering.labels.store.LabelStore.

A pair labelled more than once for a filter (several raters) counts as positive if anyone said
so: for a safety filter a missed positive costs more than a needlessly removed pair.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import shards as sh
from filtering.filter_files import check_filter_name

DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass
class Labels:
    """{filter: {uid: label}} and where it came from."""

    by_filter: dict[str, dict[str, bool]]
    source: str
    conflicts: dict[str, int] = field(default_factory=dict)  # pairs with disagreeing labels, per filter


def is_database(source: str) -> bool:
    return "://" in source and not source.startswith(("file://", "s3://", "gs://", "gcs://", "az://", "abfs://",
                                                      "memory://", "http://", "https://")) \
        or source.lower().endswith(DB_SUFFIXES)


def read_labels(source: str, filters: Optional[list[str]] = None) -> Labels:
    """Labels for `filters` (default: every filter the source names)."""
    if is_database(source):
        rows = _database_rows(source, filters)
    else:
        rows = _file_rows(source)
    by_filter: dict[str, dict[str, bool]] = {}
    conflicts: dict[str, int] = {}
    for uid, name, label in rows:
        if filters is not None and name not in filters:
            continue
        check_filter_name(name, source)
        seen = by_filter.setdefault(name, {})
        if uid in seen and seen[uid] != label:
            conflicts[name] = conflicts.get(name, 0) + 1
        seen[uid] = seen.get(uid, False) or label
    missing = [n for n in filters or () if n not in by_filter]
    if missing:
        raise sh.UserError(f"{source}: no labels for filter {missing[0]!r}")
    if not by_filter:
        raise sh.UserError(f"{source}: holds no labels")
    return Labels(by_filter=by_filter, source=source, conflicts=conflicts)


def _file_rows(source: str):
    """(uid, filter, label) of a labels file, read as `glide label import` reads it; skips dropped."""
    from filtering.labels.label_files import read_labels_file

    for label in read_labels_file(source, rater="file"):
        if label.answer != "skip":
            yield label.uid, label.filter, label.answer == "yes"


def _database_rows(source: str, filters: Optional[list[str]]):
    from filtering.labels.store import LabelStore

    with LabelStore(source, create=False) as store:  # a path or an SQLAlchemy URL
        for name in filters or store.filters():
            for uid, label in store.labels(name):
                yield str(uid), name, bool(label)
