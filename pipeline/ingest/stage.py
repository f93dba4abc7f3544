"""`ingest` as a stage: URL lists -> input shards -> Ray tasks -> DATASET (shards, rejects, manifest)."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import TextIO

import shards as sh
from pipeline.config import IngestConfig, RayConfig
from shards import UserError
from pipeline.ingest import url_lists
from pipeline.stage_runner import ShardTask, run_stage

STAGE = "ingest"


def check_dataset_path(dataset: str) -> None:
    import fsspec

    fs, p = fsspec.core.url_to_fs(dataset)
    if fs.exists(p) and not fs.isdir(p):
        raise UserError(f"{dataset}: output dataset path is a file, not a folder")


def plan_tasks(dataset: str, inputs: dict, cfg: dict) -> list[ShardTask]:
    """One task per input shard; its key ties the output to that input and this config."""
    config_digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    return [
        ShardTask(name=s["name"], rows=s["rows"],
                  key=hashlib.sha256(f"{s['sha256']}:{config_digest}".encode()).hexdigest()[:32],
                  args=(sh.join(dataset, url_lists.INPUTS_DIR, s["name"]),))
        for s in inputs["shards"]
    ]


def run_ingest(lists: list[str], dataset: str, cfg: IngestConfig, ray_cfg: RayConfig, *,
               stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> dict:
    """Crawl `lists` into `dataset`; resumes a killed run. Returns the manifest."""
    from pipeline.ingest.shard_worker import ingest_shard
    from pipeline.ray_session import ray_session

    check_dataset_path(dataset)
    print(f"{STAGE}: reading {len(lists)} URL list(s) into input shards of {cfg.shard_size:,} rows",
          file=stderr, flush=True)
    start, last = time.monotonic(), [time.monotonic()]

    def progress(rows: int) -> None:  # a line every 10 s: a 100M-row list takes minutes
        if time.monotonic() - last[0] > 10:
            last[0] = time.monotonic()
            rate = rows / (last[0] - start)
            print(f"{STAGE}: {rows:,} rows read ({rate:,.0f} rows/s)", file=stderr, flush=True)

    inputs = url_lists.shard_url_lists(lists, dataset, url_col=cfg.url_col, caption_col=cfg.caption_col,
                                       shard_size=cfg.shard_size, input_format=cfg.input_format,
                                       progress=progress)
    print(f"{STAGE}: {inputs['rows']:,} rows in {len(inputs['shards'])} shard(s)", file=stderr, flush=True)
    config = cfg.model_dump(mode="json")
    tasks = plan_tasks(dataset, inputs, config)
    with ray_session(ray_cfg):
        return run_stage(stage=STAGE, dataset=dataset, tasks=tasks, fn=ingest_shard, cfg=config,
                         retries=cfg.shard_retries, inputs=inputs["key"]["sources"],
                         stdout=stdout, stderr=stderr)
