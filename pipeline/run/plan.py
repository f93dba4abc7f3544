"""The plan of a `glide run`: for every stage of the pipeline, run or reuse, and why.

A stage is reused when its record (fingerprint.py) holds the same resolved config and the same input
digests as now, its outputs still have the digests recorded, and a shard output's manifest names the
dataset it read among its `inputs`. Once a stage runs, every stage after it runs too (its inputs are
about to change); the stages before it are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import shards as sh
from pipeline.run import fingerprint as fp
from pipeline.run.stages import EMBEDDINGS, PAIRS, STAGES, Context, Stage, artefact_digest, identity_of

RUN, REUSE, LATER = "run", "reuse", "not run"


@dataclass
class Step:
    """One stage in the plan: what it reads and writes (kind -> path), and what happens to it."""

    stage: Stage
    reads: dict
    writes: dict
    action: str = RUN
    why: str = ""
    fresh: bool = False  # remove the recorded (stale) output first
    config: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name


def pipeline_stages(ctx: Context) -> list[Stage]:
    """The stages the config runs, in pipeline order."""
    names = ctx.run.stages
    return [s for s in STAGES if (s.name in names if names is not None else s.in_default(ctx))]


def current_inputs(stage: Stage, ctx: Context, reads: dict) -> dict:
    """Digests of everything the stage reads: earlier stages' artefacts and outside inputs."""
    inputs = {kind: artefact_digest(kind, path) for kind, path in reads.items()}
    inputs.update(stage.external(ctx))
    return fp.canonical(inputs)


def make_plan(ctx: Context, start: Optional[str] = None, until: Optional[str] = None) -> list[Step]:
    stages = pipeline_stages(ctx)
    names = [s.name for s in stages]
    for flag, name in (("--from", start), ("--until", until)):
        if name is not None and name not in names:
            raise sh.UserError(f"{flag} {name}: not a stage of {ctx.config_file} (its stages: {', '.join(names)})")
    if start and until and names.index(start) > names.index(until):
        raise sh.UserError(f"--from {start} comes after --until {until}")

    written: dict[str, str] = {}
    plan: list[Step] = []
    running: Optional[str] = None  # the first stage that runs: everything after it runs too
    for i, stage in enumerate(stages):
        reads = {}
        for kind in stage.reads + stage.optional_reads:
            if kind in written:
                reads[kind] = written[kind]
            elif kind in stage.reads:
                raise sh.UserError(f"{ctx.config_file}: run.stages: {stage.name} reads {kind}, which no stage "
                                   f"before it writes")
        step = Step(stage, reads, stage.writes(ctx))
        written.update(step.writes)
        plan.append(step)
        if until is not None and i > names.index(until):
            step.action, step.why = LATER, f"after --until {until}"
            continue
        step.config = identity_of(stage, ctx)
        if start is not None and i < names.index(start):
            missing = [p for k, p in step.writes.items() if artefact_digest(k, p) is None]
            if missing:
                raise sh.UserError(f"--from {start}: {stage.name}'s output {missing[0]} is missing or unfinished; "
                                   f"run from {stage.name} (or without --from)")
            step.action, step.why = REUSE, f"before --from {start}"
            continue
        if start == stage.name:
            step.action, step.why = RUN, f"--from {start}"
        elif running is not None:
            step.action, step.why = RUN, f"{running} runs before it"
        else:
            step.action, step.why = _decide(step, ctx)
        if step.action == RUN:
            running = running or stage.name
            step.fresh = stage.fresh_on_change and _stale_record(step, ctx)
    return plan


def _stale_record(step: Step, ctx: Context) -> bool:
    """A record with another fingerprint exists: the output there belongs to other settings."""
    record = fp.read_state(ctx.out, step.name)
    if record is None:
        return False
    return record["config"] != step.config or record["inputs"] != current_inputs(step.stage, ctx, step.reads)


def _decide(step: Step, ctx: Context) -> tuple[str, str]:
    record = fp.read_state(ctx.out, step.name)
    if record is None:
        return RUN, "no record of an earlier run"
    if record["config"] != step.config:
        changed = fp.config_changes(record["config"], step.config)
        return RUN, f"config changed: {', '.join(changed) or 'its sections'}"
    inputs = current_inputs(step.stage, ctx, step.reads)
    if record["inputs"] != inputs:
        changed = [k for k in sorted(set(inputs) | set(record["inputs"]))
                   if (k in inputs) != (k in record["inputs"]) or inputs.get(k) != record["inputs"].get(k)]
        return RUN, f"input changed: {', '.join(changed)}"
    if any(v is None for v in inputs.values()):
        return RUN, "an input cannot be fingerprinted (" + ", ".join(k for k, v in inputs.items() if v is None) + ")"
    if record["status"] != "finished":
        return RUN, "the last run did not finish (it resumes)"
    recorded = record.get("outputs") or {}
    for kind, path in step.writes.items():
        if recorded.get(kind, {}).get("path") != path:
            return RUN, f"its {kind} now goes to {path}"
        if artefact_digest(kind, path) != recorded[kind].get("digest"):
            return RUN, f"its {kind} at {path} changed or is gone since it was recorded"
    mismatch = _manifest_inputs_mismatch(step, inputs)
    if mismatch:
        return RUN, mismatch
    return REUSE, f"same config and inputs as the run recorded {record['time']}"


def _manifest_inputs_mismatch(step: Step, inputs: dict) -> Optional[str]:
    """A shard output's manifest must name the dataset the stage read (its digest) among its inputs."""
    read_datasets = {k: inputs[k] for k in (PAIRS, EMBEDDINGS) if k in step.reads}
    for kind, path in step.writes.items():
        if kind not in (PAIRS, EMBEDDINGS):
            continue
        manifest = sh.read_manifest(path, missing_ok=True) or {}
        named = {i.get("manifest_sha256") for i in manifest.get("inputs", [])}
        for read_kind, digest in read_datasets.items():
            if digest not in named:
                return f"{path}/manifest.json does not name the {read_kind} it was made from"
    return None


def describe(plan: list[Step], ctx: Context) -> str:
    """The plan as a table: stage, action, why, output."""
    width = max(len(s.name) for s in plan)
    lines = [f"pipeline {ctx.config_file}: {sum(s.action == RUN for s in plan)} to run, "
             f"{sum(s.action == REUSE for s in plan)} reused"]
    for s in plan:
        out = ", ".join(dict.fromkeys(s.writes.values()))
        fresh = " (the old output is removed first)" if s.fresh else ""
        lines.append(f"  {s.name:<{width}}  {s.action:<7}  {s.why}{fresh}  -> {out}")
    return "\n".join(lines)
