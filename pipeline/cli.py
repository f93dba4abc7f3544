"""`glide`: the command line. Each subcommand lives in `pipeline/commands/<name>.py`.

A command module exposes `register(subparsers, common)`, which adds its parser
(with `parents=[common]`) and sets `func` to a callable `args -> int`.
Heavy imports (torch, ray) happen inside those callables so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from shards import StageFailed, UserError

# Order here is the order in `glide --help`.
COMMAND_MODULES = [
    "pipeline.commands.config_cmd",
    "pipeline.commands.sample_world_cmd",
    "pipeline.commands.ingest_cmd",
    "pipeline.commands.embed_cmd",
    "pipeline.commands.label_cmd",
    "pipeline.commands.fit_filters_cmd",
    "pipeline.commands.filter_cmd",
    "pipeline.commands.train_cmd",
    "pipeline.commands.plan_memory_cmd",
    "pipeline.commands.model_cmd",
    "pipeline.commands.checkpoint_cmd",
    "pipeline.commands.sample_cmd",
    "pipeline.commands.run_cmd",
    "pipeline.commands.scene_classifier_cmd",
    "pipeline.commands.standin_detector_cmd",
    "pipeline.commands.evaluate_cmd",
    "pipeline.commands.report_cmd",
    "pipeline.commands.elo_cmd",
    "pipeline.commands.pairs_cmd",
    "pipeline.commands.serve_cmd",
    "pipeline.commands.submit_cmd",
    "pipeline.commands.jobs_cmd",
]


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show full tracebacks and Ray's own logs",
    )
    common.add_argument(
        "--ray-address", default=argparse.SUPPRESS, metavar="ADDR",
        help="join this Ray cluster instead of starting an embedded one (also $RAY_ADDRESS)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="glide",
        description="GLIDE pipeline: crawl, filter, train and evaluate text-to-image diffusion models on Ray.",
        parents=[common],
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.ray_address = getattr(args, "ray_address", None)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"glide: error: {e}", file=sys.stderr)
        return e.exit_code
    except StageFailed as e:
        if args.debug:
            traceback.print_exc()
        print(f"glide: failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("glide: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `glide ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug, not bad input: keep it short unless asked
        if args.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"glide: internal error: {type(e).__name__}: {first} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
