"""`glide fit-filters`: labels + an embeddings dataset -> a FILTERS folder and its report.

    1. read the labels (file or database) and look up their embeddings (one pass over the dataset)
    2. per filter: held-out split, grid search, threshold (svm_fit.py) -- fails early, before any
       fitting, if some filter has too few held-out positives
    3. score every pair with all filters (the torch kernel; a second pass) for the fraction each
       removes, the all-pairs histograms and the examples at the boundary
    4. write FILTERS (filter_files.py), then FILTERS/report/index.html

Runs in this process: an SVM fit is one process's work, and scoring streams shard by shard.
"""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Optional, TextIO

import numpy as np

import shards as sh
from filtering.embedding_data import embedding_dim, embedding_model, iter_embedding_batches, lookup_embeddings
from filtering.filter_files import INDEX, filter_order, save_filters
from filtering.filter_report import write_report
from filtering.labels_input import Labels, read_labels
from filtering.score_summary import ScoreSummary
from filtering.svm_filter import FilterScorer, SvmFilter
from filtering.svm_fit import FitOptions, fit_filter, split_labels


@dataclass(frozen=True)
class FitRun:
    """What else fit-filters needs besides the SVM options."""

    filters: Optional[list[str]] = None   # default: every filter the labels name
    examples: int = 8                      # report examples per side of each boundary
    memory_mb: int = 256                   # kernel working memory per chunk
    device: str = "cpu"


def fit_filters(labels_source: str, embeddings: str, out: str, options: FitOptions, run: FitRun = FitRun(),
                *, stderr: Optional[TextIO] = None) -> dict:
    """Fit, save and report; returns {"filters": {name: figures}} (the --json line)."""
    stderr = stderr or sys.stderr
    _check_output(out)
    dim, model = embedding_dim(embeddings), embedding_model(embeddings)
    labels = read_labels(labels_source, run.filters)
    total_rows = sh.dataset_rows(embeddings)
    with sh.Progress("fit-filters: looking up labelled pairs", total_rows, stream=stderr) as progress:
        wanted = set().union(*labels.by_filter.values())
        found = lookup_embeddings(embeddings, wanted, progress.update)
    splits = {}  # every filter split (and its held-out positives checked) before anything is fitted
    for name in filter_order(labels.by_filter):
        x, y = _labelled_matrix(name, labels, found, embeddings, dim, stderr)
        splits[name] = split_labels(name, x, y, options, labels.source)

    filters: list[SvmFilter] = []
    with sh.Progress("fit-filters: cross-validation fits", len(splits) * options.fits_per_filter, unit="fits",
                     stream=stderr) as progress:
        for name, split in splits.items():
            progress.note(filter=name)
            filters.append(fit_filter(name, split, options, embedding_model=model, source=labels.source,
                                      report=progress.update))

    summary = score_dataset(embeddings, filters, run, stderr=stderr, total_rows=total_rows)
    for f in filters:
        f.info["removed_fraction"] = summary.fired[f.name] / max(summary.rows, 1)
        f.info["pairs_scored"] = summary.rows
    fitted_on = {"embeddings": str(embeddings), "embeddings_manifest_sha256": sh.manifest_digest(embeddings),
                 "labels": labels.source, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "target_fnr": options.target_fnr, "conflicting_labels": labels.conflicts}
    save_filters(out, filters, extra_index={"fitted_on": fitted_on})
    report = write_report(sh.join(out, "report"), title="Safety filters: fit report",
                          facts=[("filters", sh.join(out, INDEX)), ("embeddings", embeddings),
                                 ("embedding model", f"{model} ({dim}-d)"), ("labels", labels.source),
                                 ("created", fitted_on["created"])],
                          filters=filters, summary=summary, labels=labels.by_filter)
    print(f"fit-filters: report at {report}", file=stderr, flush=True)
    return {"filters": {f.name: figures(f) for f in filters}}


def figures(f: SvmFilter) -> dict:
    """The per-filter figures of the --json line."""
    return {"fnr": f.info["fnr"], "fnr_upper_95": f.info["fnr_upper_95"],
            "held_out_positives": f.info["held_out_positives"], "threshold": f.threshold,
            "removed_fraction": f.info["removed_fraction"]}


def score_dataset(dataset: str, filters: list[SvmFilter], run: FitRun, *, stderr: TextIO,
                  total_rows: Optional[int] = None) -> ScoreSummary:
    """Score every pair of `dataset` with every filter (streamed) into a ScoreSummary."""
    scorer = FilterScorer(filters, device=run.device, memory_mb=run.memory_mb)
    summary = ScoreSummary.for_filters(filters, run.examples)
    has_image = "image" in sh.read_schema(sh.list_shards(dataset)[0]).names
    columns = ["caption"] + (["image"] if has_image else [])
    with sh.Progress("fit-filters: scoring every pair", total_rows, stream=stderr) as progress:
        for batch, matrix in iter_embedding_batches(dataset, columns):
            scores = scorer.scores(matrix)
            summary.add(scores, batch.column("uid").to_pylist(), batch.column("caption").to_pylist(),
                        batch.column("image").to_pylist() if has_image else None)
            progress.update(batch.num_rows)
    return summary


def _check_output(out: str) -> None:
    fs, p = sh.url_to_fs(out)
    if fs.exists(p) and not fs.isdir(p):
        raise sh.UserError(f"{out}: output filters path is a file, not a folder")


def _labelled_matrix(name: str, labels: Labels, found: dict, embeddings: str, dim: int, stderr: TextIO):
    pairs = [(uid, label) for uid, label in sorted(labels.by_filter[name].items()) if uid in found]
    missing = len(labels.by_filter[name]) - len(pairs)
    if not pairs:
        raise sh.UserError(f"{labels.source}: none of the {missing} pairs labelled for '{name}' is in {embeddings}")
    if missing:
        print(f"fit-filters: {missing} pair(s) labelled for '{name}' are not in {embeddings}; left out",
              file=stderr, flush=True)
    x = np.stack([found[uid] for uid, _ in pairs]).reshape(len(pairs), dim)
    return x, np.array([label for _, label in pairs], dtype=bool)
