"""`glide pairs`: pairwise comparison tasks for the comparison page, and how the raters did.

    glide pairs make --report REPORT --settings guidance-1,guidance-3 --question photorealism -n 200 --db labels.db
    glide pairs list --db labels.db [--json]
    glide pairs raters --db labels.db [--question photorealism] [--json]

`make` stores a run of comparisons (evaluation.pairs: same prompt and seed on both sides, sides random
and stored, duplicated and obvious check items mixed in); raters answer them at /compare of
`glide serve`. `raters` lists each rater's checks (evaluation.judgement_quality) and who is flagged;
`glide elo fit --db DB --exclude-flagged` leaves those out.
"""
from __future__ import annotations

import argparse
import json

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser("pairs", parents=[common], help="pairwise comparison tasks and rater checks",
                              description="Make pairwise comparison tasks from an evaluation report for the "
                                          "comparison page of glide serve, list them, and check the raters.")
    sub = p.add_subparsers(dest="pairs_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        q.add_argument("--db", default=None, metavar="DB",
                       help="labels database: a path (SQLite file) or an SQLAlchemy URL (default: label.db "
                            "of the config)")
        add_config_option(q)
        q.set_defaults(func=func)
        return q

    make = action("make", "store a run of comparison tasks: two settings' samples of one prompt and seed, "
                          "sides random, with duplicated and obvious (sample against noise) check items", run_make)
    make.add_argument("--report", required=True, metavar="REPORT",
                      help="the report folder (REPORT/samples/index.parquet, REPORT/settings.json)")
    make.add_argument("--settings", required=True, metavar="A,B,...", help="the settings to compare (two or more)")
    make.add_argument("--question", required=True, metavar="photorealism|caption",
                      help='"Which image is more photorealistic?" or "Which image better matches the caption?"')
    make.add_argument("-n", type=int, required=True, metavar="N", help="comparisons (check items come on top)")
    make.add_argument("--seed", type=int, default=0, help="seed of the draw and of the sides (default 0)")
    make.add_argument("--votes-per-pair", type=int, default=3, metavar="K",
                      help="raters wanted per comparison (default 3: a majority to check raters against)")
    make.add_argument("--cap", type=int, default=None, metavar="N", help="votes one rater may give in this run")
    make.add_argument("--duplicates", type=float, default=0.05, metavar="F",
                      help="duplicated pairs, as a fraction of N (default 0.05)")
    make.add_argument("--obvious", type=float, default=0.05, metavar="F",
                      help="obvious pairs (a sample against pure noise), as a fraction of N (default 0.05)")
    make.add_argument("--json", action="store_true", help="end with one JSON line describing the run")

    listing = action("list", "the comparison runs: question, settings, votes in", run_list)
    listing.add_argument("--json", action="store_true", help="print JSON")

    checks = action("raters", "each rater's checks (obvious pairs, duplicates, agreement with the majority) "
                              "and who is flagged", run_raters)
    checks.add_argument("--question", default=None, metavar="photorealism|caption",
                        help="only this question's runs (default: each question in turn)")
    checks.add_argument("--run", type=int, default=None, metavar="ID", help="only this run")
    checks.add_argument("--json", action="store_true", help="end with one JSON line")


def _store(args):
    from filtering.labels import LabelStore
    from shards import UserError

    _, section = load_section(args, "label", {"db": args.db})
    if not section.db:
        raise UserError("--db: give the labels database (a path or an SQLAlchemy URL), or set label.db in the config")
    return LabelStore(section.db, create=args.pairs_command == "make")


def run_make(args) -> int:
    import os

    from evaluation.comparison_store import create_run
    from evaluation.pairs import check_question, image_path, plan_pairs, read_report_samples, read_report_settings
    from shards import UserError

    check_question(args.question)
    if args.votes_per_pair < 1:
        raise UserError(f"--votes-per-pair {args.votes_per_pair}: at least 1")
    if args.cap is not None and args.cap < 1:
        raise UserError(f"--cap {args.cap}: at least 1")
    report = os.path.abspath(args.report)
    samples = read_report_samples(report)
    known = read_report_settings(report)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    tasks = plan_pairs(samples, settings, args.n, seed=args.seed, duplicate_fraction=args.duplicates,
                       obvious_fraction=args.obvious, where=args.report)
    for t in tasks:   # every image there now, not a broken pair on a rater's screen later
        for path in (t.image_a, t.image_b):
            if path is not None:
                image_path(report, path, f"{args.report}/samples/index.parquet")
    kinds = {k: sum(t.kind == k for t in tasks) for k in ("compare", "duplicate", "obvious")}
    params = {"seed": args.seed, "duplicates": args.duplicates, "obvious": args.obvious, "counts": kinds,
              "settings_parameters": {s: known.get(s) for s in settings}}
    with _store(args) as store:
        run = create_run(store, question=args.question, report=report, settings=settings, tasks=tasks,
                         votes_per_pair=args.votes_per_pair, cap_per_rater=args.cap, params=params)
        print(f"run {run.id} ({args.question}): {kinds['compare']} comparisons of {', '.join(settings)}, "
              f"{kinds['duplicate']} duplicated and {kinds['obvious']} obvious check items, {args.votes_per_pair} "
              f"votes wanted per comparison in {store.name}")
        sides = sum(t.a_side == "left" for t in tasks if t.kind == "compare")
        print(f"sides: drawn at random and stored with each pair (model_a shown on the left in {sides} of "
              f"{kinds['compare']} comparisons)")
        print("raters: glide label raters add NAME prints a link; append ?next=/compare before its # to land on "
              "the comparison page, or open /compare after signing in")
        if args.json:
            print(json.dumps({"run": run.id, "question": run.question, "settings": settings, **kinds}))
    return 0


def run_list(args) -> int:
    from evaluation.comparison_store import runs

    with _store(args) as store:
        found = runs(store)
    if args.json:
        print(json.dumps({"runs": [{"id": r.id, "question": r.question, "settings": r.settings,
                                    "comparisons": r.comparisons, "checks": r.checks, "votes": r.votes,
                                    "votes_wanted": r.comparisons * r.votes_per_pair, "cap": r.cap_per_rater,
                                    "report": r.report} for r in found]}))
        return 0
    if not found:
        print("no comparison runs (glide pairs make makes one)")
    for r in found:
        cap = f", at most {r.cap_per_rater} per rater" if r.cap_per_rater else ""
        print(f"run {r.id} {r.question}: {', '.join(r.settings)}; {r.comparisons} comparisons + {r.checks} checks; "
              f"{r.votes} of {r.comparisons * r.votes_per_pair} votes in{cap}; report {r.report}")
    return 0


def run_raters(args) -> int:
    from evaluation.comparison_store import runs
    from evaluation.judgement_quality import rater_checks

    if args.question is not None:
        from evaluation.pairs import check_question

        check_question(args.question)
    with _store(args) as store:
        questions = [args.question] if args.question else sorted({r.question for r in runs(store)})
        result = {q: rater_checks(store, question=q, run_id=args.run) for q in questions}
    for question, checks in result.items():
        print(f"{question}:")
        if not checks:
            print("  no votes yet")
            continue
        print(f"  {'rater':<20} {'votes':>6} {'obvious missed':>15} {'dup. differ':>12} {'majority agreed':>16} "
              f"{'p (Holm)':>8}  flagged")
        for c in checks:
            p = "" if c.majority_p_holm is None else f"{c.majority_p_holm:.2g}"
            print(f"  {c.rater:<20} {c.votes:>6} {f'{c.obvious_missed}/{c.obvious}':>15} "
                  f"{f'{c.inconsistent}/{c.duplicates}':>12} {f'{c.majority_agreed}/{c.majority_votes}':>16} "
                  f"{p:>8}  {', '.join(c.flagged)}")
        flagged = [c.rater for c in checks if c.flagged]
        print(f"  flagged: {', '.join(flagged) if flagged else 'none'}")
    if args.json:
        print(json.dumps({q: [c.to_json() for c in checks] for q, checks in result.items()}))
    return 0
