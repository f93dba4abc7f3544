"""What decides a stage's output, as digests: its resolved config, its inputs, and the output it wrote.

A stage is done when OUT/pipeline-state/STAGE.json records the same config and input digests as now,
and its output still has the digest recorded when it finished (nobody changed or removed it since).
A record is written twice: `started` before the stage runs (so an interrupted run with another config
is known to be stale) and `finished` after it, with the output digest.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Optional

import shards as sh

STATE_DIR = "pipeline-state"


def canonical(value) -> object:
    """`value` as JSON gives it back (tuples -> lists, keys -> str): what a record compares equal to."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def dataset_digest(dataset: str) -> Optional[str]:
    """A shard dataset's identity: its manifest's sha256 (None while unfinished)."""
    return sh.manifest_digest(dataset)


def tree_digest(path: str) -> Optional[str]:
    """sha256 over a file, or over a folder's files (relative names and contents, recursively, hidden
    files skipped); None when the path does not exist."""
    fs, p = sh.url_to_fs(path)
    if not fs.exists(p):
        return None
    if not fs.isdir(p):
        return sh.file_digest(path).sha256
    h = hashlib.sha256()
    root = p.rstrip("/")
    for f in sorted(fs.find(root)):
        rel = f[len(root):].lstrip("/")
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # temporary files of a writer, never part of what a stage produced
        h.update(rel.encode() + b"\0" + bytes.fromhex(sh.file_digest(fs.unstrip_protocol(f)).sha256))
    return h.hexdigest()


def checkpoint_digest(path: str) -> Optional[str]:
    """A model's identity: the files of the checkpoint folder it resolves to (a run folder's newest
    export). None when there is none yet."""
    from training.checkpoint import resolve_checkpoint_dir

    try:
        return tree_digest(str(resolve_checkpoint_dir(path)))
    except sh.UserError:
        return None


def state_path(out: str, stage: str) -> str:
    return sh.join(out, STATE_DIR, f"{stage}.json")


def read_state(out: str, stage: str) -> Optional[dict]:
    fs, p = sh.url_to_fs(state_path(out, stage))
    try:
        with fs.open(p, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a damaged record is no record: the stage runs


def write_state(out: str, stage: str, *, status: str, config: dict, inputs: dict,
                outputs: dict, output_digest: Optional[str] = None, seconds: Optional[float] = None) -> dict:
    record = {"stage": stage, "status": status,
              "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "config": canonical(config), "inputs": canonical(inputs), "outputs": outputs,
              "output_digest": output_digest, "seconds": seconds}
    sh.write_json_atomic(state_path(out, stage), record)
    return record


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (for the plan's 'why')."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}")
    return changes
