"""`ingest` as a stage: URL lists -> input shards -> Ray tasks -> DATASET (shards, rejects, manifest)."""
from __future__ import annotations

import hashlib
import json
import sys
from typing import Optional, TextIO

import shards as sh
from pipeline.config import IngestConfig, RayConfig
from shards import UserError
from pipeline.ingest import url_lists
from pipeline.stages import ShardTask, StageSpec, run_stage

STAGE = "ingest"


def ingest_spec() -> StageSpec:
    """A Ray task per shard: crawling holds no model; each task runs its own download threads."""
    from pipeline.ingest.shard_worker import ingest_shard

    return StageSpec(name=STAGE, shard_fn=ingest_shard, num_cpus=1)


def check_dataset_path(dataset: str) -> None:
    import fsspec

    fs, p = fsspec.core.url_to_fs(dataset)
    if fs.exists(p) and not fs.isdir(p):
        raise UserError(f"{dataset}: output dataset path is a file, not a folder")


def task_key(input_sha256: str, cfg: dict) -> str:
    """Identity of one output shard: its input shard's digest and the resolved config."""
    config_digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(f"{input_sha256}:{config_digest}".encode()).hexdigest()[:32]


def plan_tasks(dataset: str, inputs: dict, cfg: dict) -> list[ShardTask]:
    """One task per input shard; its key ties the output to that input and this config."""
    return [ShardTask(name=s["name"], rows=s["rows"], key=task_key(s["sha256"], cfg),
                      args=(sh.join(dataset, url_lists.INPUTS_DIR, s["name"]),))
            for s in inputs["shards"]]


def run_ingest(lists: list[str], dataset: str, cfg: IngestConfig, ray_cfg: RayConfig, *,
               stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> dict:
    """Crawl `lists` into `dataset`; resumes a killed run. Returns the manifest."""
    from pipeline.ray_session import ray_session

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr

    check_dataset_path(dataset)
    print(f"{STAGE}: reading {len(lists)} URL list(s) into input shards of {cfg.shard_size:,} rows",
          file=stderr, flush=True)
    with sh.Progress(f"{STAGE}: URL lists read", unit="rows", stream=stderr) as reading:
        inputs = url_lists.shard_url_lists(lists, dataset, url_col=cfg.url_col, caption_col=cfg.caption_col,
                                           shard_size=cfg.shard_size, input_format=cfg.input_format,
                                           progress=reading.set)
    print(f"{STAGE}: {inputs['rows']:,} rows in {len(inputs['shards'])} shard(s)", file=stderr, flush=True)
    config = cfg.model_dump(mode="json")
    retried = _finished_with_retries(dataset, config, inputs["key"]["sources"])
    if retried is not None:
        print(f"{STAGE}: {dataset} is finished with this config and these lists (and {len(retried['retry_transient'])} "
              f"--retry-transient round(s)); nothing to do", file=stderr, flush=True)
        return retried
    tasks = plan_tasks(dataset, inputs, config)
    with ray_session(ray_cfg):
        return run_stage(ingest_spec().placed(ray_cfg.placement), dataset=dataset, tasks=tasks, cfg=config,
                         retries=cfg.shard_retries, inputs=inputs["key"]["sources"], stdout=stdout, stderr=stderr)


def _finished_with_retries(dataset: str, config: dict, sources: list) -> dict | None:
    """The manifest, if the dataset was finished from these lists and config and then had
    transient rejects re-crawled: rerunning the first command must not undo the retries."""
    manifest = sh.read_manifest(dataset, missing_ok=True)
    if not manifest or not manifest.get("retry_transient"):
        return None
    if manifest.get("config") != config or manifest.get("inputs") != sources:
        return None
    for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR):
        if not all(sh.verify_shard(sh.join(dataset, kind, e["name"]), e) for e in manifest[kind]):
            return None
    return manifest
