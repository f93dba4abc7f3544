"""Run a plan: every stage that runs, in order, in one Ray session, each recorded before and after."""
from __future__ import annotations

import os
import time

import shards as sh
from pipeline.run import fingerprint as fp
from pipeline.run.plan import RUN, Step, current_inputs, describe
from pipeline.run.stages import Context, StageExit, artefact_digest


def ray_cpus(ctx: Context, plan: list[Step]) -> None:
    """The embedded Ray's CPUs: all of them, or more when a training stage runs (as `glide train`
    asks): its workers' CPUs plus two for the Ray Data readers that feed them."""
    ray_cfg = ctx.config.ray
    if ray_cfg.num_cpus is not None or ray_cfg.address or os.environ.get("RAY_ADDRESS"):
        return
    from pipeline.run.stages import train_section

    need = [int(t.workers * t.cpus_per_worker) + 2
            for t in (train_section(ctx, s.name.split("-", 1)[1]) for s in plan
                      if s.action == RUN and s.name.startswith("train-"))]
    if need:
        ray_cfg.num_cpus = max([os.cpu_count() or 1, *need])


def run_plan(ctx: Context, plan: list[Step]) -> dict[str, float]:
    """Run the plan's stages; returns each run stage's seconds. A failed stage raises StageFailed
    (or ends with its command's exit code, through StageExit) and leaves its record `started`."""
    from pipeline.ray_session import ray_session

    print(describe(plan, ctx), flush=True)
    todo = [s for s in plan if s.action == RUN]
    seconds: dict[str, float] = {}
    if not todo:
        print("nothing to run: every stage is done with this config and these inputs", flush=True)
        return seconds
    ray_cpus(ctx, plan)
    with ray_session(ctx.config.ray):
        for n, step in enumerate(todo, 1):
            print(f"\n== glide run: {step.name} ({n}/{len(todo)}): {step.why}", flush=True)
            seconds[step.name] = _run_step(ctx, step)
    return seconds


def _run_step(ctx: Context, step: Step) -> float:
    t0 = time.perf_counter()
    inputs = current_inputs(step.stage, ctx, step.reads)
    # decided again now: an upstream stage that just ran has changed this stage's inputs since the plan
    record = fp.read_state(ctx.out, step.name)
    stale = record is not None and (record["config"] != step.config or record["inputs"] != inputs)
    if step.stage.fresh_on_change and (step.fresh or stale):
        for path in dict.fromkeys(step.writes.values()):
            fs, p = sh.url_to_fs(path)
            if fs.exists(p):
                print(f"removing {path}: made with another config or other inputs", flush=True)
                fs.rm(p, recursive=True)
    outputs = {kind: {"path": path} for kind, path in step.writes.items()}
    fp.write_state(ctx.out, step.name, status="started", config=step.config, inputs=inputs, outputs=outputs)
    step.stage.run(ctx, step.reads, step.writes)
    for kind, path in step.writes.items():
        digest = artefact_digest(kind, path)
        if digest is None:
            raise sh.StageFailed(f"{step.name}: finished without its {kind} at {path}")
        outputs[kind]["digest"] = digest
    seconds = round(time.perf_counter() - t0, 1)
    fp.write_state(ctx.out, step.name, status="finished", config=step.config, inputs=inputs, outputs=outputs,
                   seconds=seconds)
    return seconds


__all__ = ["run_plan", "StageExit"]
