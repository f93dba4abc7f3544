"""`glide ingest ... --retry-transient`: re-crawl a finished dataset's transient rejects.

A timeout, 5xx, 429 or dropped connection during a burst of load says nothing about the image.
This re-crawls exactly those rejects and moves the ones that now succeed into new shards:

    1. plan: the transient rejects become retry input shards (_inputs/retry-R-part-*.arrow, with
       each row's original `source`), and the plan (with the manifest it started from) is saved
       in _progress/retry-transient.json; the manifest is removed: the dataset is changing;
    2. the old rejects shards are rewritten without those rows (idempotent);
    3. the retry shards are crawled as new output shards (part-N.arrow onwards) by the stage
       runner, and the manifest is written last, counts still input = kept + rejected.
Killed at any point, the same command resumes from the saved plan.
"""
from __future__ import annotations

import sys
from collections import Counter, defaultdict
from typing import Optional, TextIO

import pyarrow as pa
import pyarrow.compute as pc

import shards as sh
from pipeline.config import IngestConfig, RayConfig
from pipeline.ingest import url_lists
from pipeline.ingest.fetch import TRANSIENT_REASONS
from pipeline.ingest.stage import STAGE, ingest_spec, task_key
from pipeline.stages import FileInfo, ShardResult, ShardTask, run_stage
from pipeline.stages.records import PROGRESS_DIR

PLAN = "retry-transient.json"
TRANSIENT = sorted(r.value for r in TRANSIENT_REASONS)


def _plan_path(dataset: str) -> str:
    return sh.join(dataset, PROGRESS_DIR, PLAN)


def _load_plan(dataset: str):
    import json

    fs, p = sh.url_to_fs(_plan_path(dataset))
    if not fs.exists(p):
        return None
    with fs.open(p, "rb") as f:
        return json.loads(f.read())


def _transient_rejects(dataset: str, manifest: dict) -> tuple[pa.Table, dict[str, list[str]]]:
    """The transient rejects (uid, url, caption) and, per rejects shard, the uids to move."""
    tables, moved = [], {}
    for entry in manifest["rejects"]:
        table = sh.read_table(sh.join(dataset, sh.REJECTS_DIR, entry["name"]), ["uid", "url", "caption", "reason"])
        hit = table.filter(pc.is_in(table.column("reason"), pa.array(TRANSIENT)))
        if hit.num_rows:
            tables.append(hit.select(["uid", "url", "caption"]))
            moved[entry["name"]] = hit.column("uid").to_pylist()
    if not tables:
        return pa.table({"uid": [], "url": [], "caption": []}), {}
    return pa.concat_tables(tables), moved


def _sources(dataset: str, wanted: set[str]) -> dict[str, list[str]]:
    """uid -> the `source` of each input row with that uid (a list: a pair may be listed twice)."""
    found: dict[str, list[str]] = defaultdict(list)
    # the crawl's own input shards (part-*), not an earlier round's retry inputs
    for batch in sh.iter_record_batches(dataset, ["url", "caption", "source"], kind=url_lists.INPUTS_DIR):
        for url, caption, source in zip(*(batch.column(i).to_pylist() for i in range(3))):
            uid = sh.compute_uid(url or "", caption)
            if uid in wanted:
                found[uid].append(source)
    return found


def _make_plan(dataset: str, manifest: dict, shard_size: int) -> dict | None:
    rows, moved = _transient_rejects(dataset, manifest)
    if rows.num_rows == 0:
        return None
    rnd = len(manifest.get("retry_transient", [])) + 1
    sources = _sources(dataset, set(rows.column("uid").to_pylist()))
    source_col = []
    for uid in rows.column("uid").to_pylist():
        left = sources.get(uid)
        source_col.append(left.pop(0) if left else f"{dataset}:rejects")
    table = pa.table({"url": rows.column("url"), "caption": rows.column("caption"),
                      "source": pa.array(source_col, pa.string())}, schema=url_lists.INPUT_SCHEMA)
    inputs = []
    for i, start in enumerate(range(0, table.num_rows, shard_size)):
        name = f"retry-{rnd}-{sh.shard_name(i)}"
        info = sh.write_table(sh.join(dataset, url_lists.INPUTS_DIR, name), table.slice(start, shard_size))
        inputs.append({"name": name, **info})
    plan = {"round": rnd, "base_manifest": manifest, "inputs": inputs, "moved": moved}
    sh.write_json_atomic(_plan_path(dataset), plan)
    return plan


def _carry_old_shards(dataset: str, plan: dict) -> dict[str, ShardResult]:
    """The finished shards with the moved rows taken out of their rejects (rewritten atomically)."""
    base = plan["base_manifest"]
    carried = {}
    for shard, rejects in zip(base["shards"], base["rejects"]):
        path = sh.join(dataset, sh.REJECTS_DIR, rejects["name"])
        table = sh.read_table(path)
        drop = plan["moved"].get(rejects["name"])
        if drop:
            gone = pc.and_(pc.is_in(table.column("uid"), pa.array(drop, pa.string())),
                           pc.is_in(table.column("reason"), pa.array(TRANSIENT)))
            table = table.filter(pc.invert(gone))
            info = sh.write_table(path, table)
        else:
            info = {k: rejects[k] for k in ("rows", "bytes", "sha256")}
        reasons = Counter(table.column("reason").to_pylist())
        carried[shard["name"]] = ShardResult(
            input=shard["rows"] + table.num_rows, kept=shard["rows"], rejected=dict(reasons),
            shard=FileInfo.from_dict(shard), rejects=FileInfo(name=rejects["name"], **info))
    return carried


def retry_transient(dataset: str, cfg: IngestConfig, ray_cfg: RayConfig, *,
                    stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> dict:
    """Re-crawl the transient rejects of `dataset`; returns the manifest written."""
    from pipeline.ray_session import ray_session

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr

    manifest = sh.read_manifest(dataset, missing_ok=True)
    plan = _load_plan(dataset)
    if manifest is not None:
        if manifest.get("stage") != STAGE:
            raise sh.UserError(f"{dataset}: written by stage {manifest.get('stage')!r}, not {STAGE}: "
                               f"--retry-transient re-crawls an ingest dataset")
        if plan is not None and plan["round"] <= len(manifest.get("retry_transient", [])):
            plan = None  # finished earlier; its record is only left over
        if plan is None:
            plan = _make_plan(dataset, manifest, cfg.shard_size)
            if plan is None:
                print(f"{STAGE}: {dataset} has no transient rejects ({', '.join(TRANSIENT)}); nothing to retry",
                      file=stderr, flush=True)
                return manifest
        sh.remove(sh.join(dataset, sh.MANIFEST))
    elif plan is None:
        raise sh.UserError(f"{dataset}: no {sh.MANIFEST}: the ingest has not finished; rerun the ingest command "
                           f"first (it resumes), then --retry-transient")
    base = plan["base_manifest"]
    n_rows = sum(s["rows"] for s in plan["inputs"])
    print(f"{STAGE}: retry round {plan['round']}: re-crawling {n_rows:,} transient rejects of {dataset}",
          file=stderr, flush=True)
    carried = _carry_old_shards(dataset, plan)
    config = cfg.model_dump(mode="json")
    first = len(base["shards"])
    tasks = [ShardTask(name=sh.shard_name(first + i), rows=s["rows"], key=task_key(s["sha256"], config),
                       args=(sh.join(dataset, url_lists.INPUTS_DIR, s["name"]),))
             for i, s in enumerate(plan["inputs"])]
    rounds = list(base.get("retry_transient", [])) + [
        {"round": plan["round"], "rows": n_rows, "config": config, "inputs": plan["inputs"],
         "shards": [t.name for t in tasks]}]
    with ray_session(ray_cfg):
        written = run_stage(ingest_spec().placed(ray_cfg.placement), dataset=dataset, tasks=tasks, cfg=config,
                            retries=cfg.shard_retries, inputs=base["inputs"], carried=carried,
                            record_config=base["config"],
                            manifest_extra={"retry_transient": rounds}, stdout=stdout, stderr=stderr)
    recovered = sum(s["rows"] for s in written["shards"][first:])
    rounds[-1]["recovered"] = recovered
    written = sh.write_manifest(dataset, stage=STAGE, config=base["config"], inputs=base["inputs"],
                                counts=written["counts"], shards=written["shards"], rejects=written["rejects"],
                                extra={"retry_transient": rounds})
    sh.remove(_plan_path(dataset))
    print(f"{STAGE}: retry round {plan['round']}: {recovered:,} of {n_rows:,} now kept", file=stderr, flush=True)
    return written
