"""`glide report REPORT`: rebuild REPORT/index.html (plots, grids, tables) from what `glide evaluate`
stored there, without sampling or recomputing a metric."""
from __future__ import annotations


def register(subparsers, common) -> None:
    p = subparsers.add_parser("report", parents=[common], help="rebuild an evaluation report's index.html",
                              description="Rebuild REPORT/index.html, its plots and sample grids from the files "
                                          "`glide evaluate` stored in REPORT (no sampling, no metrics).")
    p.add_argument("report", metavar="REPORT", help="a `glide evaluate -o` folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from evaluation.report_page import build_report
    from shards import UserError

    if not Path(args.report).is_dir():
        raise UserError(f"{args.report}: no such report folder")
    print(f"report: {build_report(Path(args.report))}")
    return 0
