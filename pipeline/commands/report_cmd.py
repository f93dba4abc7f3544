"""`glide report REPORT [--judgements DB_OR_FILE [--question Q] [--exclude-flagged]]`: rebuild
REPORT/index.html (plots, grids, tables) from what `glide evaluate` stored there, without sampling or
recomputing a metric; with --judgements, first fit Elo to the pairwise judgements of the report's
settings (evaluation.report_elo) and store it as REPORT/elo.json, which every later rebuild shows."""
from __future__ import annotations


def register(subparsers, common) -> None:
    p = subparsers.add_parser("report", parents=[common], help="rebuild an evaluation report's index.html",
                              description="Rebuild REPORT/index.html, its plots and sample grids from the files "
                                          "`glide evaluate` stored in REPORT (no sampling, no metrics). With "
                                          "--judgements, add the Elo table (bootstrap intervals, win rates, "
                                          "position bias) of the pairwise judgements of its settings.")
    p.add_argument("report", metavar="REPORT", help="a `glide evaluate -o` folder")
    p.add_argument("--judgements", metavar="DB_OR_FILE",
                   help="the labels database the comparison page writes (SQLite path or SQLAlchemy URL) or a "
                        ".csv/.tsv/.arrow/.feather/.parquet judgements file (model_a, model_b, winner): fit Elo "
                        "and store it as REPORT/elo.json")
    p.add_argument("--question", metavar="Q",
                   help="with --judgements: fit this question's judgements (required when there are several)")
    p.add_argument("--exclude-flagged", action="store_true",
                   help="with a --judgements database: leave out the raters `glide pairs raters` flags")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="with --judgements: bootstrap resamples for the intervals (default 1000)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from evaluation.report_page import build_report
    from shards import UserError

    report = Path(args.report)
    if not report.is_dir():
        raise UserError(f"{args.report}: no such report folder")
    if args.judgements is None:
        for flag, value in (("--question", args.question), ("--exclude-flagged", args.exclude_flagged)):
            if value:
                raise UserError(f"{flag}: only with --judgements")
    else:
        _fit_elo(report, args)
    print(f"report: {build_report(report)}")
    return 0


def _fit_elo(report, args) -> None:
    import json

    from evaluation.report_elo import read_judgements_source, report_elo, write_report_elo
    from shards import UserError

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: {args.bootstrap} is negative")
    try:
        settings = list(json.loads((report / "settings.json").read_text()))
    except (FileNotFoundError, ValueError):
        raise UserError(f"{report}: not a finished evaluation report (no readable settings.json)") from None
    table, where, db = read_judgements_source(args.judgements)
    found = report_elo(table, where, db=db, settings=settings, question=args.question,
                       exclude_flagged=args.exclude_flagged, bootstrap=args.bootstrap)
    write_report_elo(report, found)
    ranking = ", ".join(f"{name} {m['elo']:+.0f}" for name, m in found["models"].items())
    print(f"Elo from {found['judgements']:,} judgements in {where}: {ranking}")
    if found["excluded_raters"] is not None:
        print(f"left out, flagged by their checks: {', '.join(found['excluded_raters']) or 'nobody'}")
