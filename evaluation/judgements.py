"""Pairwise human judgements, the input of the Elo fit: from a file or from the labels database.

    table = read_judgements_file("judgements.csv")        # or .arrow / .feather / .parquet
    table = read_judgements_db("labels.db")               # the comparison page's judgements table
    table = select_judgements(table, "judgements.csv", question="photorealism", exclude_raters=["r7"])
    judgements = Judgements.from_table(table, "judgements.csv")   # -> evaluation.elo.fit_elo

A judgements file has the columns
    model_a, model_b   the two models (settings) compared, any names
    winner             a, b or tie ("both_bad", the page's "both are bad", counts as a tie)
and optionally question (e.g. photorealism, caption), rater and prompt. Bad input is a one-line
UserError naming the file (or database), the row (counted from 1) and the column.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import shards as sh
from evaluation.elo import A_WINS, B_WINS, TIE

REQUIRED = ("model_a", "model_b", "winner")
OPTIONAL = ("question", "rater", "prompt")
WINNER_CODES = {"a": A_WINS, "b": B_WINS, "tie": TIE, "both_bad": TIE}
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
            ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Judgements:
    """Judgements as model indices: models[a[k]] against models[b[k]] with outcome[k] (elo.A_WINS,
    elo.B_WINS or elo.TIE). `models` is sorted by name."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @classmethod
    def from_table(cls, table: pa.Table, where: str) -> "Judgements":
        """Check and encode the columns model_a, model_b, winner of `table` (UserError naming `where`)."""
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise sh.UserError(f"{where}: no column {missing[0]!r} (judgements need model_a, model_b and winner)")
        if table.num_rows == 0:
            raise sh.UserError(f"{where}: no judgements")
        a, b = (_text_column(table, c, where, strip=True) for c in ("model_a", "model_b"))
        winner = pc.utf8_lower(_text_column(table, "winner", where, strip=True))
        for name, column in (("model_a", a), ("model_b", b)):
            _fail_at(pc.equal(column, ""), table, where, name, "empty model name")
        _fail_at(pc.equal(a, b), table, where, "model_b", "the same model as model_a (a model against itself)")
        known = pa.array(sorted(WINNER_CODES))
        _fail_at(pc.invert(pc.is_in(winner, value_set=known)), table, where, "winner", "not a, b or tie",
                 show=winner)
        names = sorted(set(pc.unique(a).to_pylist()) | set(pc.unique(b).to_pylist()))
        lookup = pa.array(names)
        index_a = pc.index_in(a, value_set=lookup).to_numpy(zero_copy_only=False).astype(np.int32)
        index_b = pc.index_in(b, value_set=lookup).to_numpy(zero_copy_only=False).astype(np.int32)
        codes = pa.array([WINNER_CODES[w] for w in sorted(WINNER_CODES)], pa.int8())
        outcome = pc.take(codes, pc.index_in(winner, value_set=known)).to_numpy(zero_copy_only=False)
        return cls(models=names, a=index_a, b=index_b, outcome=outcome.astype(np.int8))


def _text_column(table: pa.Table, name: str, where: str, strip: bool = False) -> pa.ChunkedArray:
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_dictionary(column.type)):
        raise sh.UserError(f"{where}: column {name!r} holds {column.type}, not text")
    column = column.cast(pa.string())
    _fail_at(pc.is_null(column), table, where, name, "empty")
    return pc.utf8_trim_whitespace(column) if strip else column


def _fail_at(bad: pa.ChunkedArray, table: pa.Table, where: str, column: str, what: str, show=None) -> None:
    """UserError at the first row where `bad` is true."""
    if not pc.any(bad).as_py():
        return
    row = int(pc.index(bad, True).as_py())
    value = (show if show is not None else table.column(column))[row].as_py()
    shown = f" {str(value)[:40]!r}" if value not in (None, "") else ""
    raise sh.UserError(f"{where}: row {row + 1}: column {column!r}:{shown} {what}")


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def read_judgements_file(path: str) -> pa.Table:
    """A judgements file (CSV/TSV, optionally .gz; Arrow IPC file or stream; Parquet) as a table,
    text columns as text. UserError naming the file when it is missing or unreadable."""
    import pyarrow.csv as pacsv
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    suffix = os.path.splitext(path.lower().removesuffix(".gz"))[1]
    kind = SUFFIXES.get(suffix)
    if kind is None:
        raise sh.UserError(f"{path}: judgements files are .csv, .tsv, .arrow, .feather or .parquet")
    fs, p = sh.url_to_fs(path)
    if not fs.exists(p) or fs.isdir(p):
        raise sh.UserError(f"{path}: judgements file not found")
    try:
        with fs.open(p, "rb", compression="infer") as f:
            data = f.read()
        if kind == "csv":
            text = {c: pa.string() for c in REQUIRED + OPTIONAL}
            parse = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            return pacsv.read_csv(pa.BufferReader(data), parse_options=parse,
                                  convert_options=pacsv.ConvertOptions(column_types=text))
        if kind == "parquet":
            return pq.read_table(pa.BufferReader(data))
        try:
            return ipc.open_file(pa.BufferReader(data)).read_all()
        except pa.ArrowInvalid:  # not the file format: maybe the stream format
            return ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise sh.UserError(f"{path}: not a readable {kind} judgements file ({str(e).splitlines()[0][:160]})") from None


def read_judgements_db(db: str) -> pa.Table:
    """The current judgements in the labels database (filtering.labels; the comparison page writes
    them): undone ones and the votes on check items (a duplicated pair, a sample against noise:
    evaluation.judgement_quality reads those) left out, and of several votes by one rater on one pair
    and question only the latest. Columns: model_a, model_b, winner, question, rater, prompt, pair_id, a_side."""
    import sqlalchemy as sa

    from filtering.labels.database import display_name, open_engine, read_transaction, upgrade
    from filtering.labels.schema import judgements, raters

    name = display_name(db)
    engine = open_engine(db, create=False)
    try:
        upgrade(engine, where=name)
        query = (sa.select(judgements.c.id, judgements.c.model_a, judgements.c.model_b, judgements.c.winner,
                           judgements.c.question, raters.c.name.label("rater"), judgements.c.prompt,
                           judgements.c.pair_id, judgements.c.a_side, judgements.c.rater_id)
                 .select_from(judgements.outerjoin(raters, judgements.c.rater_id == raters.c.id))
                 .where(judgements.c.undone_at.is_(None), judgements.c.check_kind.is_(None))
                 .order_by(judgements.c.id))
        with read_transaction(engine) as conn:
            rows = conn.execute(query).all()
    finally:
        engine.dispose()
    latest: dict = {}
    for row in rows:  # in id order: a later vote on the same (rater, pair, question) replaces an earlier one
        key = (row.rater_id, row.pair_id, row.question) if row.pair_id is not None and row.rater_id is not None \
            else ("row", row.id)
        latest[key] = row
    kept = sorted(latest.values(), key=lambda r: r.id)
    columns = ("model_a", "model_b", "winner", "question", "rater", "prompt", "pair_id", "a_side")
    return pa.table({c: pa.array([getattr(r, c) for r in kept], pa.string()) for c in columns})


def select_judgements(table: pa.Table, where: str, *, question: Optional[str] = None,
                      exclude_raters: Iterable[str] = ()) -> pa.Table:
    """The rows for one question (required when the table holds several) without the excluded raters."""
    questions = []
    if "question" in table.column_names:
        questions = sorted(q for q in pc.unique(table.column("question").cast(pa.string())).to_pylist()
                           if q not in (None, ""))
    if question is not None:
        if "question" not in table.column_names:
            raise sh.UserError(f"{where}: --question {question}: the judgements have no column 'question'")
        if question not in questions:
            raise sh.UserError(f"{where}: --question {question}: no judgements for it (questions: "
                               f"{', '.join(questions) or 'none'})")
        table = table.filter(pc.equal(table.column("question").cast(pa.string()), question))
    elif len(questions) > 1:
        raise sh.UserError(f"{where}: holds judgements for {len(questions)} questions ({', '.join(questions)}); "
                           f"Elo is fitted per question: choose one with --question")
    exclude = sorted(set(exclude_raters))
    if exclude:
        if "rater" not in table.column_names:
            raise sh.UserError(f"{where}: --exclude-raters: the judgements have no column 'rater'")
        rater = table.column("rater").cast(pa.string())
        unknown = [r for r in exclude if not pc.any(pc.equal(rater, r)).as_py()]
        if unknown:
            raise sh.UserError(f"{where}: --exclude-raters: no judgements by {unknown[0]!r}")
        table = table.filter(pc.invert(pc.fill_null(pc.is_in(rater, value_set=pa.array(exclude)), False)))
    return table
