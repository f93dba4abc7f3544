"""Resume records: DATASET/_progress/<shard>.json, saved after a task's two files are in place.

A re-run skips a task whose record has the same `key` and whose two files still verify (size +
sha256), so killing the process at any point loses only the work in flight.
"""
from __future__ import annotations

import json
from typing import Optional

import shards as sh
from pipeline.stages.types import ShardResult, ShardTask

PROGRESS_DIR = "_progress"
FAILURES = "failures.json"


def record_path(dataset: str, name: str) -> str:
    return sh.join(dataset, PROGRESS_DIR, name.replace(".arrow", ".json"))


def save_done(dataset: str, task: ShardTask, result: ShardResult) -> None:
    sh.write_json_atomic(record_path(dataset, task.name), {"key": task.key, "result": result.to_dict()})


def load_done(dataset: str, task: ShardTask) -> Optional[ShardResult]:
    """The saved result of `task` if it finished for this key and its files verify."""
    fs, p = sh.url_to_fs(record_path(dataset, task.name))
    try:
        with fs.open(p, "rb") as f:
            record = json.loads(f.read())
        if record.get("key") != task.key:
            return None
        result = ShardResult.from_dict(record["result"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    ok = (sh.verify_shard(sh.join(dataset, sh.SHARDS_DIR, task.name), result.shard.to_dict())
          and sh.verify_shard(sh.join(dataset, sh.REJECTS_DIR, task.name), result.rejects.to_dict()))
    return result if ok else None


def remove_stale_outputs(dataset: str, names: Optional[set[str]]) -> None:
    """Drop shards (and their records) of an earlier run that are not among `names`, and the
    temporary files of writers that were killed (a run starts only when no other writes here).
    `names` None: only the temporary files (a finished run's writers that died with their node)."""
    for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR, PROGRESS_DIR):
        fs, p = sh.url_to_fs(sh.join(dataset, kind))
        if not fs.exists(p):
            continue
        for path in fs.ls(p, detail=False):
            base = path.rstrip("/").rsplit("/", 1)[-1]
            stale = names is not None and base.startswith("part-") and base.replace(".json", ".arrow") not in names
            if stale or (base.startswith(".part-") and base.endswith(".tmp")):
                fs.rm(path)


def save_failures(dataset: str, failed: list[ShardTask]) -> str:
    path = sh.join(dataset, PROGRESS_DIR, FAILURES)
    sh.write_json_atomic(path, {t.name: t.errors for t in failed})
    return path


def clear_failures(dataset: str) -> None:
    sh.remove(sh.join(dataset, PROGRESS_DIR, FAILURES))
