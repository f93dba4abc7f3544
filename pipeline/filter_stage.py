"""`filter` as a stage: DATASET_EMB + FILTERS -> DATASET_FILTERED (kept shards, rejects, manifest, report).

One task per input shard, run by FilterStageWorker actors (filtering.filter_worker: the filters
loaded once per actor, on its GPU when the cluster has GPUs). A task's key digests its input shard,
the stage config and the filters' files, so a rerun with other filters redoes every shard.
After the stage, the per-shard report parts are merged into DATASET_FILTERED/report/index.html.
"""
from __future__ import annotations

import hashlib
import json
import sys
from typing import Optional, TextIO

import shards as sh
from filtering.embedding_data import embedding_dim, embedding_model
from filtering.filter_files import filters_digest, load_filters
from filtering.filter_report import write_report
from filtering.filter_worker import STAGE, FilterWorker, reject_reason
from filtering.score_summary import ScoreSummary
from pipeline.config import FilterConfig, RayConfig
from pipeline.stages import ShardResult, ShardTask, StageSpec, run_stage

REPORT_DIR = "report"
REPORT_PARTS = "report/shards"


class FilterStageWorker(FilterWorker):
    """The library's worker, returning the stage library's typed result."""

    def process(self, job, report) -> ShardResult:
        return ShardResult.from_dict(super().process(job, report))


def filter_spec(cfg: FilterConfig) -> StageSpec:
    return StageSpec(name=STAGE, worker=FilterStageWorker, num_cpus=1, num_gpus="auto", max_workers=cfg.workers)


def task_key(input_sha256: str, config: dict) -> str:
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(f"{input_sha256}:{text}".encode()).hexdigest()[:32]


def check_paths(dataset: str, out: str) -> None:
    fs, p = sh.url_to_fs(out)
    if fs.exists(p) and not fs.isdir(p):
        raise sh.UserError(f"{out}: output dataset path is a file, not a folder")
    if sh.url_to_fs(dataset)[1].rstrip("/") == p.rstrip("/"):
        raise sh.UserError(f"{out}: the output must be another folder than the input {dataset}")


def check_compatible(dataset: str, filters: str, filter_set) -> None:
    """The filters must have been fitted on embeddings of the same model and size."""
    dim, model = embedding_dim(dataset), embedding_model(dataset)
    if dim != filter_set.embedding_dim:
        raise sh.UserError(f"{dataset}: embeddings have {dim} values; the filters in {filters} were fitted on "
                           f"{filter_set.embedding_dim}")
    if "unknown" not in (model, filter_set.embedding_model) and model != filter_set.embedding_model:
        raise sh.UserError(f"{dataset}: embedded with {model!r}; the filters in {filters} were fitted on "
                           f"{filter_set.embedding_model!r} embeddings")


def run_filter(dataset: str, filters: str, out: str, cfg: FilterConfig, ray_cfg: RayConfig, *,
               stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> dict:
    """Filter `dataset` into `out`; resumes a killed run. Returns the manifest."""
    from pipeline.ray_session import ray_session

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    check_paths(dataset, out)
    filter_set = load_filters(filters)  # a bad filters folder fails here, before Ray starts
    check_compatible(dataset, filters, filter_set)
    upstream = sh.read_manifest(dataset)
    config = {**cfg.model_dump(mode="json"), "filters": str(filters), "filters_sha256": filters_digest(filters),
              "order": filter_set.names}
    worker_cfg = {**config, "report_parts": sh.join(out, REPORT_PARTS)}
    tasks = [ShardTask(name=s["name"], rows=int(s["rows"]), key=task_key(s["sha256"], config),
                       args=(sh.join(dataset, sh.SHARDS_DIR, s["name"]),)) for s in upstream[sh.SHARDS_DIR]]
    print(f"{STAGE}: {sum(t.rows for t in tasks):,} pairs in {len(tasks)} shard(s) through "
          f"{', '.join(filter_set.names)}", file=stderr, flush=True)
    thresholds = {f.name: f.threshold for f in filter_set.filters}
    with ray_session(ray_cfg):
        manifest = run_stage(filter_spec(cfg).placed(ray_cfg.placement), dataset=out, tasks=tasks, cfg=worker_cfg,
                             retries=cfg.shard_retries, inputs=[sh.input_ref(dataset)], record_config=config,
                             stdout=stdout, stderr=stderr,
                             manifest_extra={"filters": {"order": filter_set.names, "thresholds": thresholds}})
    summary = merge_report_parts(out, [t.name for t in tasks], filter_set.filters, cfg.report_examples, stderr)
    report = write_report(sh.join(out, REPORT_DIR), title="Safety filters: filter report",
                          facts=[("input", dataset), ("output", out), ("filters", filters),
                                 ("embedding model", f"{filter_set.embedding_model} ({filter_set.embedding_dim}-d)")],
                          filters=filter_set.filters, summary=summary,
                          removed_first={f.name: manifest["counts"]["rejected"].get(reject_reason(f.name), 0)
                                         for f in filter_set.filters})
    print(f"{STAGE}: report at {report}", file=stderr, flush=True)
    return manifest


def merge_report_parts(out: str, shard_names: list[str], filters, examples: int, stderr: TextIO) -> ScoreSummary:
    """The workers' per-shard summaries (REPORT_PARTS/<shard>.json) as one; a missing part (deleted by
    hand) leaves its shard out of the report's histograms, with a warning, never out of the data."""
    summary = ScoreSummary.for_filters(filters, examples)
    for name in shard_names:
        path = sh.join(out, REPORT_PARTS, name.replace(".arrow", ".json"))
        fs, p = sh.url_to_fs(path)
        try:
            with fs.open(p, "rb") as f:
                part = ScoreSummary.from_json(json.loads(f.read().decode("utf-8")))
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"{STAGE}: warning: {path}: report part unreadable ({type(e).__name__}); "
                  f"shard {name} is left out of the report", file=stderr, flush=True)
            continue
        summary.merge(part)
    return summary
