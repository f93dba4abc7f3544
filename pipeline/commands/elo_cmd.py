"""`glide elo fit [--db URL | JUDGEMENTS_FILE] [--json]`: Elo scores from pairwise human judgements.

    glide elo fit judgements.csv --question photorealism
    glide elo fit --db labels.db --question caption --exclude-raters r7,r9 --json

The fit is evaluation.elo (GLIDE Appendix A.1, maximum likelihood, bootstrap intervals); the file
format is evaluation.judgements'. `--json` prints as its last line
{"models": {NAME: {"elo": E, "ci_low": L, "ci_high": H, "comparisons": N}, ...}}.
The same fit goes into an evaluation report with `glide report REPORT --judgements DB_OR_FILE`.
"""
from __future__ import annotations

import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser("elo", parents=[common], help="Elo scores from pairwise human judgements",
                              description="Elo scores from pairwise human judgements (GLIDE Appendix A.1; "
                                          "see docs/evaluation.md).")
    sub = p.add_subparsers(dest="elo_command", metavar="ACTION", required=True)
    fit = sub.add_parser(
        "fit", parents=[common], help="fit Elo scores with bootstrap intervals and print the win-rate table",
        description="Fit maximum-likelihood Elo scores (P(i beats j) = 1/(1+10^((s_j-s_i)/400)), a tie half a "
                    "win each, centred at mean 0) with bootstrap confidence intervals, and print them with "
                    "the table of win rates. Judgements come from a CSV or Arrow file (columns model_a, "
                    "model_b, winner = a|b|tie; optional question, rater, prompt) or from the labels database "
                    "the comparison page writes (--db).")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("judgements", nargs="?", metavar="JUDGEMENTS_FILE",
                        help="a .csv/.tsv (optionally .gz), .arrow/.feather or .parquet file of judgements")
    source.add_argument("--db", metavar="URL", help="the labels database (SQLite path or SQLAlchemy URL)")
    fit.add_argument("--question", metavar="Q",
                     help="fit the judgements of this question only (required when there are several)")
    fit.add_argument("--exclude-raters", metavar="R1,R2", default="",
                     help="leave these raters' judgements out (comma-separated names)")
    fit.add_argument("--exclude-flagged", action="store_true",
                     help="with --db: leave out the raters glide pairs raters flags (failed obvious pairs, "
                          "inconsistent on duplicates, against the majority beyond chance)")
    fit.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                     help="bootstrap resamples for the intervals (default 1000; 0: none)")
    fit.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    fit.add_argument("--json", action="store_true",
                     help='end with one JSON line {"models": {NAME: {"elo", "ci_low", "ci_high", "comparisons"}}}')
    fit.set_defaults(func=run_fit)


def run_fit(args) -> int:
    from shards import UserError
    from evaluation.elo import fit_elo
    from evaluation.judgements import (Judgements, read_judgements_db, read_judgements_file,
                                       select_judgements)

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: {args.bootstrap} is negative")
    if not 0.0 < args.confidence < 1.0:
        raise UserError(f"--confidence: {args.confidence} is not between 0 and 1")
    if args.db is not None:
        from filtering.labels.database import display_name

        where = display_name(args.db)
        table = read_judgements_db(args.db)
    else:
        where = args.judgements
        table = read_judgements_file(args.judgements)
    exclude = [r.strip() for r in args.exclude_raters.split(",") if r.strip()]
    if args.exclude_flagged:
        exclude += _flagged(args, table, where, exclude)
    table = select_judgements(table, where, question=args.question, exclude_raters=exclude)
    judgements = Judgements.from_table(table, where)
    result = fit_elo(judgements, bootstrap=args.bootstrap, confidence=args.confidence, seed=args.seed,
                     where=where)
    what = f" ({args.question})" if args.question else ""
    print(f"Elo from {len(judgements):,} judgements{what} of {len(result.models)} models in {where}")
    print(result.format_table())
    from evaluation.judgement_quality import position_bias

    bias = position_bias(table)   # the comparison page stores the sides; a file may not
    if bias is not None:
        print(bias.describe())
    if args.json:
        found = result.to_json()
        if bias is not None:
            found["position_bias"] = bias.to_json()
        if args.exclude_flagged:
            found["excluded_raters"] = sorted(set(exclude))
        print(json.dumps(found))
    return 0


def _flagged(args, table, where: str, excluded: list) -> list:
    """The raters evaluation.judgement_quality flags for the question fitted (printed)."""
    from shards import UserError
    from evaluation.report_elo import flagged_voters

    if args.db is None:
        raise UserError("--exclude-flagged: needs --db (the checks come from the comparison page's check items)")
    flagged = flagged_voters(args.db, table, args.question, excluded)
    print(f"left out, flagged by their checks (glide pairs raters): {', '.join(flagged) or 'nobody'}")
    return flagged
