"""Run a stage's per-shard work on Ray: resume, retries, progress, summary, manifest last.

A stage hands `run_stage` one `ShardTask` per output shard and a module-level function
    fn(*task.args, pairs_path, rejects_path, cfg, report) -> result
where result = {"input", "kept", "rejected": {reason: n}, "shard": info, "rejects": info}
and info = {"name", "rows", "bytes", "sha256"} of a file the task wrote atomically.

Resume: after a task succeeds its result is saved as DATASET/_progress/<name>.json (after
its shards). A re-run skips a task whose record has the same `key` and whose two files
still verify (size + sha256), so killing the process at any point loses only work in flight.
Retries: a failed task is resubmitted up to `retries` times, each error kept; a task that
still fails makes the stage raise StageFailed naming it, and no manifest is written.
"""
from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

import fsspec

import shards as sh
from shards import StageFailed

PROGRESS_DIR = "_progress"


@dataclass
class ShardTask:
    name: str                  # output shard file name, e.g. "part-00003.arrow"
    rows: int                  # input rows (progress total)
    key: str                   # identity of input + config; a record with another key is stale
    args: tuple = ()           # leading arguments of the stage function
    errors: list[str] = field(default_factory=list)


class ProgressCounter:
    """Ray actor (0 CPUs): tasks add rows as they go; the driver reads the total."""

    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def get(self) -> int:
        return self.rows


class _Reporter:
    """report(n) inside a task: batches row counts into one actor call per ~0.5 s."""

    def __init__(self, counter):
        self.counter, self.pending, self.last = counter, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if self.counter is not None and self.pending and now - self.last > 0.5:
            self.counter.add.remote(self.pending)
            self.pending, self.last = 0, now

    def flush(self) -> None:
        if self.counter is not None and self.pending:
            self.counter.add.remote(self.pending)
            self.pending = 0


def _execute(fn: Callable, args: tuple, pairs_path: str, rejects_path: str, cfg: dict, counter) -> dict:
    report = _Reporter(counter)
    try:
        return fn(*args, pairs_path, rejects_path, cfg, report)
    finally:
        report.flush()


def _record_path(dataset: str, name: str) -> str:
    return sh.join(dataset, PROGRESS_DIR, name.replace(".arrow", ".json"))


def load_done(dataset: str, task: ShardTask) -> Optional[dict]:
    """The saved result of `task` if it finished for this key and its files verify."""
    fs, p = fsspec.core.url_to_fs(_record_path(dataset, task.name))
    try:
        with fs.open(p, "rb") as f:
            record = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    if record.get("key") != task.key:
        return None
    result = record["result"]
    ok = sh.verify_shard(sh.join(dataset, sh.SHARDS_DIR, task.name), result["shard"]) and sh.verify_shard(
        sh.join(dataset, sh.REJECTS_DIR, task.name), result["rejects"])
    return result if ok else None


class ProgressLine:
    """Periodic 'stage: rows/total (rows/s)' on stderr: redrawn on a terminal, a line every 10 s otherwise."""

    def __init__(self, stage: str, total: int, stream: TextIO):
        self.stage, self.total, self.stream = stage, total, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, rows: int, shards_done: int, shards_total: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (1.0 if self.tty else 10.0):
            return
        self.last = now
        rows = min(rows, self.total)
        rate = rows / max(now - self.start, 1e-6)
        pct = 100.0 * rows / self.total if self.total else 100.0
        text = (f"{self.stage}: {rows:,}/{self.total:,} rows ({pct:.0f}%) {rate:,.1f} rows/s, "
                f"shards {shards_done}/{shards_total}" + (f", {failed} retried" if failed else ""))
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if force else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def summary_table(stage: str, dataset: str, counts: dict, seconds: float, new_rows: int,
                  skipped: int, shards: int) -> str:
    """Readable end-of-stage table: rows/s, kept, rejected by reason, where the output is."""
    rejected = counts["rejected"]
    n_rej = sum(rejected.values())
    total = max(counts["input"], 1)
    rows = [("input rows", f"{counts['input']:,}", ""),
            ("kept", f"{counts['kept']:,}", f"{100 * counts['kept'] / total:.1f}%"),
            ("rejected", f"{n_rej:,}", f"{100 * n_rej / total:.1f}%")]
    rows += [(f"  {reason}", f"{n:,}", f"{100 * n / total:.1f}%")
             for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1])]
    rows += [("shards", f"{shards:,}", f"{skipped} reused" if skipped else ""),
             ("time", f"{seconds:,.1f} s", ""),
             ("rows/s (this run)", f"{new_rows / max(seconds, 1e-6):,.1f}", "")]
    width = max(len(r[0]) for r in rows)
    lines = [f"{stage} summary"] + [f"  {a:<{width}}  {b:>12}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"  dataset: {dataset}")
    return "\n".join(lines)


def run_stage(*, stage: str, dataset: str, tasks: list[ShardTask], fn: Callable, cfg: dict,
              retries: int, inputs: Optional[list[dict]] = None, num_cpus: float = 1,
              stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> dict:
    """Run `fn` for every task on Ray (already initialised); returns the manifest written."""
    import ray

    start = time.monotonic()
    results: dict[str, dict] = {}
    todo: deque[ShardTask] = deque()
    for task in tasks:
        done = load_done(dataset, task)
        if done is not None:
            results[task.name] = done
        else:
            todo.append(task)
    skipped = len(results)
    if todo:  # the dataset is about to change: it is no longer finished
        fs, mp = fsspec.core.url_to_fs(sh.join(dataset, sh.MANIFEST))
        if fs.exists(mp):
            fs.rm(mp)
        _remove_stale_outputs(dataset, {t.name for t in tasks})

    total = sum(t.rows for t in tasks)
    reused_rows = sum(r["input"] for r in results.values())
    progress = ProgressLine(stage, total, stderr)
    counter = ray.remote(num_cpus=0)(ProgressCounter).remote() if todo else None
    remote = ray.remote(num_cpus=num_cpus, max_retries=0)(_execute)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    max_in_flight = max(1, int(cpus / max(num_cpus, 0.01))) * 2
    in_flight: dict[Any, ShardTask] = {}
    failed: list[ShardTask] = []
    attempts_failed = 0

    def submit(task: ShardTask):
        ref = remote.remote(fn, task.args, sh.join(dataset, sh.SHARDS_DIR, task.name),
                            sh.join(dataset, sh.REJECTS_DIR, task.name), cfg, counter)
        in_flight[ref] = task

    while todo or in_flight:
        while todo and len(in_flight) < max_in_flight:
            submit(todo.popleft())
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            task = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # task error or a dead worker: keep it, maybe retry
                attempts_failed += 1
                task.errors.append(_short_error(e))
                if len(task.errors) <= retries:
                    submit(task)
                else:
                    failed.append(task)
                continue
            sh.write_json_atomic(_record_path(dataset, task.name), {"key": task.key, "result": result})
            results[task.name] = result
        live = ray.get(counter.get.remote()) if counter is not None else 0
        progress.update(reused_rows + live, len(results), len(tasks), attempts_failed)
    progress.update(total if not failed else reused_rows, len(results), len(tasks), attempts_failed, force=True)

    ordered = [results[t.name] for t in tasks if t.name in results]
    counts = {"input": sum(r["input"] for r in ordered), "kept": sum(r["kept"] for r in ordered), "rejected": {}}
    for r in ordered:
        for reason, n in r["rejected"].items():
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
    seconds = time.monotonic() - start
    new_rows = counts["input"] - reused_rows
    print(summary_table(stage, dataset, counts, seconds, new_rows, skipped, len(tasks)), file=stdout)
    if failed:
        names = ", ".join(t.name for t in failed)
        detail = failed[0].errors[-1]
        errors_path = sh.join(dataset, PROGRESS_DIR, "failures.json")
        sh.write_json_atomic(errors_path, {t.name: t.errors for t in failed})
        raise StageFailed(f"{stage}: {len(failed)} shard(s) failed after {retries + 1} attempts: {names} "
                          f"(last error: {detail}; every attempt's error in {errors_path}); "
                          f"rerun the same command to retry them")
    fs, fp = fsspec.core.url_to_fs(sh.join(dataset, PROGRESS_DIR, "failures.json"))
    if fs.exists(fp):  # an earlier run's failures, now resolved
        fs.rm(fp)
    return sh.write_manifest(
        dataset, stage=stage, config=cfg, inputs=inputs or [], counts=counts,
        shards=[r["shard"] for r in ordered], rejects=[r["rejects"] for r in ordered],
    )


def _remove_stale_outputs(dataset: str, names: set[str]) -> None:
    """Drop shards (and their records) of an earlier run with more shards than this one."""
    for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR, PROGRESS_DIR):
        fs, p = fsspec.core.url_to_fs(sh.join(dataset, kind))
        if not fs.exists(p):
            continue
        for path in fs.ls(p, detail=False):
            base = path.rstrip("/").rsplit("/", 1)[-1]
            if base.startswith("part-") and base.replace(".json", ".arrow") not in names:
                fs.rm(path)


def _short_error(e: BaseException) -> str:
    """One line for a Ray task error: the underlying exception's type and message."""
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(cause).__name__}: {last}"[:300]
