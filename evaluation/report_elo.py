"""The Elo fit an evaluation report shows: judgements from a labels database or a judgements file, fitted
(evaluation.elo) and stored as REPORT/elo.json, which evaluation.report_page renders into index.html.

    table, where, db = read_judgements_source("labels.db")     # or a .csv/.arrow/.parquet file
    found = report_elo(table, where, db=db, settings=["guidance-1", "guidance-3"], question="photorealism",
                       exclude_flagged=True)
    write_report_elo(Path("REPORT"), found)                     # REPORT/elo.json; read_report_elo reads it

The models of the judgements are the report's setting names (`glide pairs make` stores them), so a
judgement naming a model the report does not have is bad input: it was made from another report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import shards as sh
from evaluation.judgements import SUFFIXES, read_judgements_db, read_judgements_file

ELO_FILE = "elo.json"


def read_judgements_source(source: str):
    """(table, where, db): a judgements file when `source` ends like one (.csv, .arrow, .parquet, ...,
    optionally .gz), else the labels database at that SQLite path or SQLAlchemy URL (db is then `source`)."""
    from filtering.labels.database import display_name

    suffix = os.path.splitext(str(source).lower().removesuffix(".gz"))[1]
    if "://" not in str(source) and suffix in SUFFIXES:
        return read_judgements_file(str(source)), str(source), None
    return read_judgements_db(str(source)), display_name(str(source)), str(source)


def flagged_voters(db: str, table, question: Optional[str], excluded: Sequence[str] = ()) -> list[str]:
    """The raters evaluation.judgement_quality flags for `question` (the table's only question when
    None) who have a vote in `table` and are not already in `excluded`."""
    from evaluation.judgement_quality import flagged_raters
    from filtering.labels import LabelStore

    if question is None and "question" in table.column_names:
        found = {q for q in table.column("question").to_pylist() if q}
        question = found.pop() if len(found) == 1 else None
    with LabelStore(db, create=False) as store:
        flagged = [r for r in flagged_raters(store, question=question) if r not in excluded]
    present = set()
    if "rater" in table.column_names:
        questions = table.column("question").to_pylist() if "question" in table.column_names else None
        present = {r for k, r in enumerate(table.column("rater").to_pylist())
                   if question is None or questions is None or questions[k] == question}
    return [r for r in flagged if r in present]   # a flagged rater may have no comparison vote in force


def report_elo(table, where: str, *, db: Optional[str], settings: Sequence[str], question: Optional[str] = None,
               exclude_flagged: bool = False, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit the judgements of `table` for the report whose settings are `settings`; the JSON-ready
    result REPORT/elo.json stores (models highest Elo first, win rates, position bias, excluded raters)."""
    from evaluation.elo import fit_elo
    from evaluation.judgement_quality import position_bias
    from evaluation.judgements import Judgements, select_judgements

    if exclude_flagged and db is None:
        raise sh.UserError(f"{where}: --exclude-flagged needs the labels database (the checks come from the "
                           f"comparison page's check items), not a judgements file")
    excluded = flagged_voters(db, table, question) if exclude_flagged else []
    table = select_judgements(table, where, question=question, exclude_raters=excluded)
    judgements = Judgements.from_table(table, where)
    unknown = sorted(set(judgements.models) - set(settings))
    if unknown:
        raise sh.UserError(f"{where}: judges {unknown[0]!r}, which is no setting of this report (its settings: "
                           f"{', '.join(settings)}); were the pairs made from another report?")
    result = fit_elo(judgements, bootstrap=bootstrap, seed=seed, where=where)
    order = result.order()
    rates, games = result.win_rates(), result.games
    bias = position_bias(table)
    if question is None and "question" in table.column_names:
        question = next((q for q in table.column("question").to_pylist() if q), None)
    return {**result.to_json(), "source": where, "question": question, "judgements": len(judgements),
            "confidence": result.confidence, "bootstrap": result.bootstrap,
            "bootstrap_failed": result.bootstrap_failed,
            "win_rates": {"order": [result.models[i] for i in order],
                          "rows": [[None if i == j or games[i, j] == 0 else
                                    {"rate": round(float(rates[i, j]), 4), "games": int(games[i, j])}
                                    for j in order] for i in order]},
            "position_bias": bias.to_json() if bias is not None else None,
            "excluded_raters": sorted(excluded) if exclude_flagged else None}


def write_report_elo(report: Path, found: dict) -> Path:
    path = Path(report) / ELO_FILE
    sh.write_bytes_atomic(str(path), (json.dumps(found, indent=1) + "\n").encode())
    return path


def read_report_elo(report: Path) -> Optional[dict]:
    """REPORT/elo.json, or None when no Elo was fitted for this report."""
    path = Path(report) / ELO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise sh.UserError(f"{path}: not valid JSON ({e})") from None
