"""`glide run PIPELINE.yaml [--from STAGE] [--until STAGE] [--dry-run]`: a whole pipeline, stage by stage."""
from __future__ import annotations

import argparse
import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "run", parents=[common], help="run a whole pipeline: the stages its config names, skipping finished ones",
        description="Run the stages PIPELINE.yaml names (ingest, embed, label or fit-filters + filter, train-base, "
                    "train-upsampler, train-base-unfiltered, train-clip, train-inpaint, sample, evaluate, claims), in "
                    "order, each stage's output the next one's input, every stage "
                    "the real `glide` command in one Ray session. A stage is reused when its record in "
                    "OUT/pipeline-state holds the same resolved config and input digests and its output is "
                    "unchanged; a changed config or input reruns that stage and every stage after it.")
    p.add_argument("pipeline", metavar="PIPELINE.yaml", help="pipeline config (its `run` section names the stages)")
    p.add_argument("--from", dest="start", metavar="STAGE", default=None,
                   help="rerun from this stage (the stages before it must be finished; they are reused)")
    p.add_argument("--until", metavar="STAGE", default=None, help="stop after this stage")
    p.add_argument("--quick", action="store_true",
                   help="the reduced run: the config's `quick` section laid over its other sections (its own "
                        "run.out, so the full run's outputs are left alone)")
    p.add_argument("--out", metavar="DIR", default=None, help="the run's folder instead of the config's run.out")
    p.add_argument("--dry-run", action="store_true", help="print the plan (each stage: run or reuse, and why)")
    p.add_argument("--json", action="store_true",
                   help='print {"stages": {NAME: {"action", "why", "outputs", "seconds"}}} as the last line')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.config import load_config, to_yaml
    from pipeline.run.execute import run_plan
    from pipeline.run.plan import describe, make_plan
    from pipeline.run.stages import Context, StageExit

    config = load_config(args.pipeline, quick=args.quick)
    if args.out:
        config.run.out = args.out
    if args.ray_address:
        config.ray.address = args.ray_address
    if args.debug:
        config.ray.log_to_driver = True
    config_file = args.pipeline
    if args.quick:  # the stages' commands read --config FILE: give them the merged one
        config_file = str(Path(config.run.out) / "quick-config.yaml")
    if args.quick and not args.dry_run:
        Path(config.run.out).mkdir(parents=True, exist_ok=True)
        Path(config_file).write_text(f"# written by glide run --quick: {args.pipeline} with its quick section "
                                     f"laid over it\n" + to_yaml(config))
    ctx = Context(config=config, config_file=config_file, out=config.run.out,
                  datasets=config.run.datasets or config.run.out)
    plan = make_plan(ctx, start=args.start, until=args.until)
    seconds: dict[str, float] = {}
    if args.dry_run:
        print(describe(plan, ctx), flush=True)
    else:
        try:
            seconds = run_plan(ctx, plan)
        except StageExit as e:
            print(f"glide run: stopped at a failed stage: {e}", flush=True)
            return e.code
    if args.json:
        print(json.dumps({"stages": {s.name: {"action": s.action, "why": s.why, "outputs": s.writes,
                                              "seconds": seconds.get(s.name)} for s in plan}}))
    return 0
