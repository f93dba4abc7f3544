"""manifest.json: what a stage wrote, from what, with which config; written last, atomically.

Keys: format, version, stage, created, config, inputs ([{"path", "manifest_sha256"}]),
shards / rejects ([{"name", "rows", "bytes", "sha256"}]), counts ({"input", "kept",
"rejected": {reason: n}}). The invariant input = kept + sum(rejected) is checked on write.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Iterable, Optional

from shards.digests import bytes_sha256
from shards.errors import UserError
from shards.files import join, url_to_fs, write_json_atomic
from shards.schema import FORMAT, MANIFEST, VERSION


def read_manifest(dataset: str, missing_ok: bool = False) -> Optional[dict]:
    """The dataset's manifest.json as a dict (None if absent and `missing_ok`)."""
    path = join(dataset, MANIFEST)
    fs, p = url_to_fs(path)
    try:
        with fs.open(p, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UserError(f"{dataset}: no {MANIFEST} (the stage that writes it has not finished)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} manifest")
    if data.get("version", 0) > VERSION:
        raise UserError(f"{path}: manifest version {data.get('version')} is newer than this code ({VERSION})")
    return data


def manifest_digest(dataset: str) -> Optional[str]:
    """sha256 of a dataset's manifest.json (how downstream manifests name their inputs)."""
    fs, p = url_to_fs(join(dataset, MANIFEST))
    try:
        with fs.open(p, "rb") as f:
            return bytes_sha256(f.read())
    except FileNotFoundError:
        return None


def input_ref(dataset: str) -> dict:
    """How a downstream manifest names a finished upstream dataset: its path and manifest digest."""
    digest = manifest_digest(dataset)
    if digest is None:
        raise UserError(f"{dataset}: no {MANIFEST} (the stage that writes it has not finished)")
    return {"path": str(dataset), "manifest_sha256": digest}


def check_counts(counts: dict, where: str = "") -> None:
    """Raise ValueError unless input = kept + sum(rejected)."""
    rejected = counts.get("rejected", {})
    if counts["input"] != counts["kept"] + sum(rejected.values()):
        raise ValueError(f"{where}: counts break input = kept + rejected: {counts}")


def write_manifest(
    dataset: str,
    *,
    stage: str,
    config: dict,
    shards: Iterable[dict],
    counts: dict,
    inputs: Optional[list[dict]] = None,
    rejects: Optional[Iterable[dict]] = None,
    extra: Optional[dict] = None,
) -> dict:
    """Write manifest.json last and atomically; returns what was written.

    `shards`: [{"name", "rows", "bytes", "sha256"}]; `counts`: {"input", "kept", "rejected": {reason: n}}.
    Refuses counts that break the invariant input = kept + sum(rejected), and shard rows that
    do not add up to `kept`. `extra`: stage-specific keys (e.g. per-filter counts).
    """
    check_counts(counts, dataset)
    shards = list(shards)
    if sum(s["rows"] for s in shards) != counts["kept"]:
        raise ValueError(f"{dataset}: shard rows do not add up to kept={counts['kept']}")
    rejects = list(rejects or [])
    n_rejected = sum(counts.get("rejected", {}).values())
    if rejects and sum(r["rows"] for r in rejects) != n_rejected:
        raise ValueError(f"{dataset}: rejects rows do not add up to rejected={n_rejected}")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": inputs or [],
        "shards": shards,
        "rejects": rejects,
        "counts": {"input": counts["input"], "kept": counts["kept"],
                   "rejected": dict(sorted(counts.get("rejected", {}).items()))},
        **(extra or {}),
    }
    write_json_atomic(join(dataset, MANIFEST), manifest)
    return manifest
