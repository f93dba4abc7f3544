"""Read the human labels fit-filters learns from: a file, or the labels database.

    LABELS   a CSV, Arrow IPC (.arrow/.feather) or Parquet file with columns uid, filter, label
             (label: true/false, 1/0, yes/no), or a database: an SQLAlchemy URL (sqlite:///labels.db,
             postgresql://...) or a .db/.sqlite file, read through filtering.labels.store.LabelStore.

A pair labelled more than once for a filter (several raters) counts as positive if anyone said
so: for a safety filter a missed positive costs more than a needlessly removed pair.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import shards as sh
from filtering.filter_files import CANONICAL_ORDER, check_filter_name

TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}
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


def _parse_label(value, source: str, row: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise sh.UserError(f"{source}: row {row}: label {str(value)[:40]!r} is not true/false")


def _read_table(source: str):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    fs, p = sh.url_to_fs(source)
    if not fs.exists(p) or fs.isdir(p):
        raise sh.UserError(f"{source}: labels file not found")
    suffix = os.path.splitext(p.lower().removesuffix(".gz"))[1]
    try:
        with fs.open(p, "rb", compression="infer") as f:
            data = f.read()
        if suffix in (".parquet", ".pq"):
            return pq.read_table(pa.BufferReader(data))
        if suffix in (".arrow", ".feather", ".ipc"):
            return ipc.open_file(pa.BufferReader(data)).read_all()
        if suffix in (".csv", ".tsv"):
            parse = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            convert = pacsv.ConvertOptions(column_types={"uid": pa.string(), "filter": pa.string(),
                                                         "label": pa.string()})
            return pacsv.read_csv(pa.BufferReader(data), parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as e:
        raise sh.UserError(f"{source}: not a readable labels file ({str(e).splitlines()[0][:160]})") from None
    raise sh.UserError(f"{source}: labels must be .csv, .tsv, .arrow, .feather or .parquet "
                       f"(or a database URL such as sqlite:///labels.db)")


def _file_rows(source: str):
    table = _read_table(source)
    missing = [c for c in ("uid", "filter", "label") if c not in table.column_names]
    if missing:
        raise sh.UserError(f"{source}: labels need columns uid, filter, label; {missing[0]!r} is missing")
    uids, names, labels = (table.column(c).to_pylist() for c in ("uid", "filter", "label"))
    for i, (uid, name, label) in enumerate(zip(uids, names, labels), start=1):
        if uid is None or name is None or label is None:
            raise sh.UserError(f"{source}: row {i}: uid, filter and label must all be given")
        yield str(uid), str(name), _parse_label(label, source, i)


def _database_rows(source: str, filters: Optional[list[str]]):
    url = source if "://" in source else f"sqlite:///{os.path.abspath(source)}"
    try:
        from filtering.labels.store import LabelStore
    except ImportError:
        raise sh.UserError(f"{source}: reading labels from a database needs filtering.labels.store "
                           f"(not installed here); export them to a CSV or Arrow file instead") from None
    store = LabelStore(url)
    names = filters or list(getattr(store, "filters", lambda: CANONICAL_ORDER)())
    for name in names:
        for uid, label in store.labels(name):
            yield str(uid), name, bool(label)
