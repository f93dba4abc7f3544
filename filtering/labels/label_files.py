"""Labels files: what `glide label export` writes and `glide label import` reads.

    columns  uid (32 hex), filter, label (yes / no / skip; also true/false, 1/0, y/n), rater, created
             (ISO 8601 with a zone, or an Arrow timestamp), client_id (optional: the label's id, so an
             export imported again is stored once)
    formats  .csv / .tsv, .arrow / .feather (Arrow IPC file), .parquet (by suffix; .gz for CSV)

Only uid, filter and label are required to import: rater and created default to the command's
--rater and the time of import. A malformed file is a UserError naming the file, row and column.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Iterator, Optional

import pyarrow as pa

import shards as sh
from filtering.labels.store import Answer, NewLabel, check_label

COLUMNS = ("uid", "filter", "label", "rater", "created", "client_id")
REQUIRED = ("uid", "filter", "label")
ANSWER_WORDS = {"yes": "yes", "y": "yes", "true": "yes", "t": "yes", "1": "yes",
                "no": "no", "n": "no", "false": "no", "f": "no", "0": "no", "skip": "skip", "s": "skip"}
CSV_SUFFIXES, ARROW_SUFFIXES, PARQUET_SUFFIXES = (".csv", ".tsv"), (".arrow", ".feather", ".ipc"), (".parquet", ".pq")


def file_kind(path: str) -> str:
    suffix = os.path.splitext(path.lower().removesuffix(".gz"))[1]
    for kind, suffixes in (("csv", CSV_SUFFIXES), ("arrow", ARROW_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise sh.UserError(f"{path}: labels files are .csv, .tsv, .arrow, .feather or .parquet")


def read_labels_table(path: str) -> pa.Table:
    """The file as a table with every column read as text or its Arrow type; UserError naming it."""
    import pyarrow.csv as pacsv
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    kind = file_kind(path)
    fs, p = sh.url_to_fs(path)
    if not fs.exists(p) or fs.isdir(p):
        raise sh.UserError(f"{path}: labels file not found")
    try:
        with fs.open(p, "rb", compression="infer") as f:
            data = pa.BufferReader(f.read())
        if kind == "csv":
            delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
            # every column as text: a uid of digits or a label of 0/1 must not become a number
            return pacsv.read_csv(data, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                  convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS},
                                                                       strings_can_be_null=False))
        if kind == "arrow":
            return ipc.open_file(data).read_all()
        return pq.read_table(data)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise sh.UserError(f"{path}: not a readable {kind} labels file ({str(e).splitlines()[0][:160]})") from None


def parse_answer(value, where: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    word = ANSWER_WORDS.get(str(value).strip().lower()) if value is not None else None
    if word is None:
        raise sh.UserError(f"{where}: column 'label': {str(value)[:40]!r} is not yes, no or skip")
    return word


def parse_time(value, where: str) -> Optional[dt.datetime]:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise sh.UserError(f"{where}: column 'created': {str(value)[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise sh.UserError(f"{where}: column 'created': {str(value)[:40]!r} has no time zone (add Z or +00:00)")
    return moment.astimezone(dt.timezone.utc)


def import_client_id(uid: str, filter_name: str, answer: str, rater: str, created: Optional[dt.datetime]) -> str:
    """The same row imported twice is the same label: its id is a digest of what it says."""
    text = "\n".join([uid, filter_name, answer, rater, created.isoformat() if created else ""])
    return "import-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def read_labels_file(path: str, *, rater: str, now: Optional[dt.datetime] = None) -> Iterator[NewLabel]:
    """The file's rows as labels to store (source "import"); UserError naming file, row and column."""
    table = read_labels_table(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise sh.UserError(f"{path}: labels need columns uid, filter, label (optional rater, created, client_id); "
                           f"column {missing[0]!r} is missing")
    now = now or dt.datetime.now(dt.timezone.utc)
    columns = {c: table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
               for c in COLUMNS}
    for i in range(table.num_rows):
        where = f"{path}: row {i + 1}"  # 1-based data rows (after a CSV's header)
        uid, name = columns["uid"][i], columns["filter"][i]
        if not isinstance(uid, str) or not uid.strip():
            raise sh.UserError(f"{where}: column 'uid' is empty")
        if not isinstance(name, str) or not name.strip():
            raise sh.UserError(f"{where}: column 'filter' is empty")
        answer = parse_answer(columns["label"][i], where)
        who = columns["rater"][i] or rater
        created = parse_time(columns["created"][i], where)
        client_id = columns["client_id"][i] or import_client_id(uid.strip().lower(), name.strip(), answer,
                                                                str(who), created)
        label = NewLabel(uid=uid.strip().lower(), filter=name.strip(), answer=answer, rater=str(who),
                         source="import", client_id=str(client_id), created=created or now)
        check_label(label, where)
        yield label


def write_labels_file(path: str, answers: list[Answer]) -> int:
    """Write `answers` (columns uid, filter, label, rater, created, client_id) atomically; returns rows."""
    import gzip

    import pyarrow.csv as pacsv
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    kind = file_kind(path)
    table = pa.table({
        "uid": pa.array([a.uid for a in answers], pa.string()),
        "filter": pa.array([a.filter for a in answers], pa.string()),
        "label": pa.array([a.answer for a in answers], pa.string()),
        "rater": pa.array([a.rater for a in answers], pa.string()),
        "created": pa.array([a.created for a in answers], pa.timestamp("us", tz="UTC")),
        "client_id": pa.array([a.client_id for a in answers], pa.string()),
    })
    sink = pa.BufferOutputStream()
    if kind == "arrow":
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    elif kind == "parquet":
        pq.write_table(table, sink)
    else:
        text = table.set_column(4, "created", pa.array([a.created.isoformat() for a in answers], pa.string()))
        delimiter = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
        pacsv.write_csv(text, sink, pacsv.WriteOptions(delimiter=delimiter, quoting_style="needed"))
    data = sink.getvalue().to_pybytes()
    sh.write_bytes_atomic(path, gzip.compress(data, mtime=0) if path.lower().endswith(".gz") else data)
    return table.num_rows
