"""Human labels for the safety filters: a database (SQLAlchemy; a SQLite file by default) and its doors.

    store.py        LabelStore: labels (idempotent by client id), undo via the audit trail, queues, raters
    schema.py       the tables; migrations/ (Alembic) upgrade an older database file when opened
    selection.py    pick pairs from an embeddings dataset: random, CLIP text search, nearest a boundary
    pickers.py      fill queues with those picks; ground_truth.py answers them from a sample world
    label_files.py  CSV / Arrow / Parquet labels files (export, import)

`load_labels(path_or_url, filter_name)` reads either a labels file or a database.
"""
from __future__ import annotations

from filtering.labels.store import LabelStore, NewLabel

DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def is_database(source: str) -> bool:
    """An SQLAlchemy URL (scheme+driver://) or a SQLite file by its suffix; anything else is a labels file."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    file_schemes = ("file", "s3", "gs", "gcs", "az", "abfs", "memory", "http", "https")
    return (bool(scheme) and scheme not in file_schemes) or source.lower().endswith(DATABASE_SUFFIXES)


def load_labels(path_or_url: str, filter_name: str) -> list[tuple[str, bool]]:
    """[(uid, label)] for `filter_name` from a labels database or file, combined as LabelStore.labels does."""
    if is_database(path_or_url):
        with LabelStore(path_or_url, create=False) as store:
            return store.labels(filter_name)
    import datetime as dt

    from filtering.labels.label_files import read_labels_file

    latest: dict[tuple[str, str], tuple[dt.datetime, int, str]] = {}  # (uid, rater) -> (created, row, answer)
    for row, label in enumerate(read_labels_file(path_or_url, rater="import")):
        if label.filter == filter_name:
            key = (label.uid, label.rater)
            if key not in latest or (label.created, row) > latest[key][:2]:
                latest[key] = (label.created, row, label.answer)
    combined: dict[str, bool] = {}
    for (uid, _), (_, _, answer) in latest.items():
        if answer != "skip":
            combined[uid] = combined.get(uid, False) or answer == "yes"
    return sorted(combined.items())


__all__ = ["LabelStore", "NewLabel", "is_database", "load_labels"]
