"""The filter stage's per-worker class: FILTERS loaded once per Ray actor, then one shard at a time.

For every input pair: the score of every filter (the batched torch kernel, on the actor's GPU when
it has one). A pair no filter fires on is kept, with a `score_<filter>` column per filter appended;
any other pair becomes a reject: reason `filtered_<first filter that fires, in FILTERS order>`,
its score, and a detail naming every filter that fired. Besides the two shards, each shard's
ScoreSummary (histograms, boundary examples) goes to REPORT_PARTS/<shard>.json for the report.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

import shards as sh
from filtering.embedding_data import COLUMN, to_matrix
from filtering.filter_files import load_filters
from filtering.score_summary import ScoreSummary
from filtering.svm_filter import FilterScorer

STAGE = "filter"
REQUIRED = ("uid", "url", "caption", COLUMN)


def reject_reason(name: str) -> str:
    return f"filtered_{name}"


def fired_key(name: str) -> str:
    """ShardResult.extra key: pairs this filter fired on (also those another filter removed first)."""
    return f"fired_{name}"


class FilterWorker:
    """cfg: {"filters": FILTERS, "kernel_memory_mb", "report_examples", "report_parts": folder}."""

    def __init__(self, cfg: dict, context):
        self.filter_set = load_filters(cfg["filters"])
        self.filters = self.filter_set.filters
        self.names = [f.name for f in self.filters]
        self.scorer = FilterScorer(self.filters, device=context.device, memory_mb=int(cfg["kernel_memory_mb"]))
        self.examples = int(cfg["report_examples"])
        self.report_parts = cfg["report_parts"]

    def process(self, job, report) -> dict:
        """Filter one shard: job.args = (input shard path,); writes job.pairs_path and job.rejects_path.

        Returns the ShardResult as a dict (ShardResult.to_dict's shape): `filtering` may not import
        the stage library, so the pipeline's wrapper turns it into the dataclass.
        """
        (input_path,) = job.args
        schema = sh.read_schema(input_path)
        self._check_input(input_path, schema)
        out_schema = sh.extend_schema(schema, *(sh.score_field(n) for n in self.names))
        summary = ScoreSummary.for_filters(self.filters, self.examples)
        rejected = {reject_reason(n): 0 for n in self.names}
        total = 0
        with sh.ShardWriter(job.pairs_path, out_schema) as kept_out, \
                sh.ShardWriter(job.rejects_path, sh.REJECTS_SCHEMA) as rejects_out:
            for batch in sh.iter_shard_batches(input_path):
                scores = self.scorer.scores(to_matrix(batch.column(COLUMN), input_path))
                fired = self.scorer.removes(scores)
                removed = fired.any(axis=1)
                kept_out.write(self._kept(batch, scores, ~removed, out_schema))
                rejects, first = self._rejects(batch, scores, fired, removed)
                rejects_out.write(rejects)
                for j, name in enumerate(self.names):
                    rejected[reject_reason(name)] += int(np.count_nonzero(first == j))
                images = batch.column("image").to_pylist() if "image" in batch.schema.names else None
                summary.add(scores, batch.column("uid").to_pylist(), batch.column("caption").to_pylist(), images)
                total += batch.num_rows
                report(batch.num_rows)
            # the report part first: a shard whose files are in place always has its part
            sh.write_json_atomic(sh.join(self.report_parts, job.name.replace(".arrow", ".json")), summary.to_json())
            kept_info, rejects_info = kept_out.close(), rejects_out.close()
        return {"input": total, "kept": kept_info["rows"], "rejected": {k: v for k, v in rejected.items() if v},
                "shard": {"name": job.name, **kept_info}, "rejects": {"name": job.name, **rejects_info},
                "extra": {fired_key(n): summary.fired[n] for n in self.names}}

    def _check_input(self, path: str, schema: pa.Schema) -> None:
        missing = [c for c in REQUIRED if c not in schema.names]
        if missing:
            raise sh.UserError(f"{path}: shard has no column {missing[0]!r}")
        field_type = schema.field(COLUMN).type
        size = getattr(field_type, "list_size", None)
        if size != self.filter_set.embedding_dim:
            raise sh.UserError(f"{path}: {COLUMN} is {field_type}; the filters in {self.filter_set.path} "
                               f"expect {self.filter_set.embedding_dim} values")

    def _kept(self, batch: pa.RecordBatch, scores: np.ndarray, keep: np.ndarray, schema: pa.Schema) -> pa.RecordBatch:
        mask = pa.array(keep)
        score_columns = {f"score_{n}": pa.array(scores[keep, j].astype(np.float32), pa.float32())
                         for j, n in enumerate(self.names)}
        arrays = [score_columns[f.name] if f.name in score_columns else batch.column(f.name).filter(mask)
                  for f in schema]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _rejects(self, batch, scores, fired, removed) -> tuple[pa.RecordBatch, np.ndarray]:
        """The removed rows as rejects; also each row's first firing filter (-1 if none)."""
        first = np.where(removed, fired.argmax(axis=1), -1)
        rows = np.flatnonzero(removed)
        details = ["fired: " + ", ".join(f"{n} {scores[i, j]:.4f} >= {self.filters[j].threshold:.4f}"
                                         for j, n in enumerate(self.names) if fired[i, j]) for i in rows]
        take = pa.array(rows, pa.int64())
        table = pa.RecordBatch.from_arrays([
            batch.column("uid").take(take), batch.column("url").take(take), batch.column("caption").take(take),
            pa.array([STAGE] * len(rows), pa.string()),
            pa.array([reject_reason(self.names[first[i]]) for i in rows], pa.string()),
            pa.array(details, pa.string()),
            pa.array([scores[i, first[i]] for i in rows], pa.float32()),
        ], schema=sh.REJECTS_SCHEMA)
        return table, first
