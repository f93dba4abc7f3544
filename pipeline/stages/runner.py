"""Run a stage's per-shard work on Ray: resume, retries, progress, summary, manifest last.

    run_stage(spec, dataset=..., tasks=[ShardTask...], cfg=..., retries=...) -> manifest

Resume: a task whose record (records.py) has the same key and whose files verify is skipped.
Retries: a failed task is resubmitted up to `retries` times, each error kept; a task that still
fails makes the stage raise StageFailed naming it (every error in _progress/failures.json), and no
manifest is written. A UserError from a task (bad input) is not retried: it ends the stage at once.
`carried`: results of shards this run keeps as they are (e.g. a retry of transient rejects adds
shards to a finished dataset); they count in the manifest and are never removed as stale.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, Optional, TextIO

import shards as sh
from pipeline.stages import records
from pipeline.stages.execution import ProgressCounter, make_dispatcher, on_this_node, short_error
from pipeline.stages.summary import summary_table, total_counts, total_extra
from pipeline.stages.types import ShardJob, ShardResult, ShardTask, StageSpec


def run_stage(spec: StageSpec, *, dataset: str, tasks: list[ShardTask], cfg: dict, retries: int,
              inputs: Optional[list[dict]] = None, carried: Optional[dict[str, ShardResult]] = None,
              manifest_extra: Optional[dict] = None, record_config: Optional[dict] = None,
              stdout: Optional[TextIO] = None,
              stderr: Optional[TextIO] = None) -> dict:
    """Run every task on Ray (already initialised); returns the manifest written.

    `cfg` goes to every task; the manifest records `record_config` when given, else `cfg`.
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    start = time.monotonic()
    carried = dict(carried or {})
    results: dict[str, ShardResult] = {}
    todo: deque[ShardTask] = deque()
    for task in tasks:
        done = records.load_done(dataset, task)
        if done is not None:
            results[task.name] = done
        else:
            todo.append(task)
    skipped = len(results)
    if todo:  # the dataset is about to change: it is no longer finished
        sh.remove(sh.join(dataset, sh.MANIFEST))
        records.remove_stale_outputs(dataset, {t.name for t in tasks} | set(carried))

    total = sum(t.rows for t in tasks)
    reused_rows = sum(r.input for r in results.values())
    ran = bool(todo)
    failed = _execute(spec, dataset, todo, cfg, retries, results, total, reused_rows, len(tasks), stderr) \
        if todo else []

    ordered = [carried[n] for n in sorted(carried)] + [results[t.name] for t in tasks if t.name in results]
    counts = total_counts(ordered)
    seconds = time.monotonic() - start
    new_rows = sum(r.input for r in results.values()) - reused_rows
    print(summary_table(spec.name, dataset, counts, seconds, new_rows, skipped + len(carried),
                        len(tasks) + len(carried)), file=stdout, flush=True)
    if failed:
        failed = sorted(failed, key=lambda t: t.name)  # completion order varies; name order reads well
        names = ", ".join(t.name for t in failed)
        errors_path = records.save_failures(dataset, failed)
        raise sh.StageFailed(f"{spec.name}: {len(failed)} shard(s) failed after {retries + 1} attempts: {names} "
                             f"(last error: {failed[0].errors[-1]}; every attempt's error in {errors_path}); "
                             f"rerun the same command to retry them")
    records.clear_failures(dataset)
    if ran:  # nothing of this run writes any more: what a killed attempt left half-written goes
        records.remove_stale_outputs(dataset, None)
    extra = dict(manifest_extra or {})
    per_shard = total_extra(ordered)
    if per_shard:
        extra.setdefault("extra_counts", per_shard)
    return sh.write_manifest(
        dataset, stage=spec.name, config=cfg if record_config is None else record_config,
        inputs=inputs or [], counts=counts,
        shards=[r.shard.to_dict() for r in ordered], rejects=[r.rejects.to_dict() for r in ordered],
        extra=extra,
    )


def _execute(spec: StageSpec, dataset: str, todo: deque, cfg: dict, retries: int,
             results: dict[str, ShardResult], total: int, reused_rows: int, n_tasks: int,
             stderr: TextIO) -> list[ShardTask]:
    """Run `todo` to completion or failure; fills `results`, returns the tasks that failed for good."""
    import ray

    counter = ray.remote(num_cpus=0, **on_this_node())(ProgressCounter).remote()
    dispatcher = make_dispatcher(spec, cfg, counter, len(todo))
    in_flight: dict[Any, ShardTask] = {}
    failed: list[ShardTask] = []
    attempts_failed = 0
    progress = sh.Progress(spec.name, total, unit="rows", stream=stderr, initial=reused_rows)

    def submit(task: ShardTask) -> None:
        job = ShardJob(name=task.name, args=task.args, pairs_path=sh.join(dataset, sh.SHARDS_DIR, task.name),
                       rejects_path=sh.join(dataset, sh.REJECTS_DIR, task.name))
        in_flight[dispatcher.submit(job)] = task

    try:
        while todo or in_flight:
            while todo and dispatcher.has_room(len(in_flight)):
                submit(todo.popleft())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                task = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # task error or a dead worker: keep it, maybe retry
                    dispatcher.done(ref, failed=True)
                    user_error = _user_error(e)
                    if user_error is not None:
                        raise sh.UserError(str(user_error)) from None
                    attempts_failed += 1
                    task.errors.append(short_error(e))
                    if len(task.errors) <= retries:
                        todo.append(task)
                    else:
                        failed.append(task)
                    continue
                dispatcher.done(ref, failed=False)
                records.save_done(dataset, task, result)
                results[task.name] = result
            live = ray.get(counter.get.remote())
            progress.note(shards=f"{len(results)}/{n_tasks}", **({"retried": attempts_failed} if attempts_failed else {}))
            progress.set(min(reused_rows + live, total))
    finally:
        if not failed and not todo and not in_flight:
            progress.set(sum(r.input for r in results.values()))
        progress.close()
        for ref in in_flight:
            ray.cancel(ref, force=True)
        dispatcher.shutdown()
        ray.kill(counter)
    return failed


def _user_error(e: BaseException) -> Optional[sh.UserError]:
    cause = getattr(e, "cause", None)
    for candidate in (cause, e):
        if isinstance(candidate, sh.UserError):
            return candidate
    return None
