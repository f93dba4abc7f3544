"""`glide fit-filters --labels LABELS --embeddings DATASET_EMB -o FILTERS`: one RBF-SVM per category."""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "fit-filters", parents=[common], help="fit the safety filters (RBF-SVMs) on labels and CLIP embeddings",
        description="Fit one RBF-SVM per filter (people, violence, hate, ...) on the labelled pairs' CLIP "
                    "embeddings: C and gamma by stratified cross-validation on the training split, then the "
                    "threshold tuned on held-out positives so the false-negative rate is under the target with "
                    "95% confidence (Clopper-Pearson). Writes FILTERS (safetensors + JSON, no pickle) and "
                    "FILTERS/report/index.html.",
    )
    p.add_argument("--labels", required=True, metavar="LABELS_OR_DB",
                   help="labels: CSV/Arrow/Parquet file with columns uid, filter, label, or a labels database "
                        "(SQLAlchemy URL such as sqlite:///labels.db, or a .db file)")
    p.add_argument("--embeddings", required=True, metavar="DATASET_EMB", help="dataset with a clip_embedding column")
    p.add_argument("-o", "--output", required=True, metavar="FILTERS", help="output filters folder")
    add_config_option(p)
    p.add_argument("--target-fnr", type=float, default=None, help="false-negative rate to stay under (default: 0.01)")
    p.add_argument("--held-out", type=int, default=None,
                   help="labelled pairs held out per filter to tune the threshold (default: 1024)")
    p.add_argument("--filters", default=None, metavar="NAMES",
                   help="comma-separated filters to fit (default: every filter the labels name)")
    p.add_argument("--json", action="store_true",
                   help='print {"filters": {NAME: {"fnr", "fnr_upper_95", "held_out_positives", "threshold", '
                        '"removed_fraction"}}} as the last line')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from filtering.fit_filters import FitRun, fit_filters
    from filtering.svm_fit import FitOptions

    filters = [n.strip() for n in args.filters.split(",") if n.strip()] if args.filters else None
    flags = {"target_fnr": args.target_fnr, "held_out": args.held_out, "filters": filters}
    _, section = load_section(args, "fit_filters", flags)
    options = FitOptions(target_fnr=section.target_fnr, held_out=section.held_out, cv_folds=section.cv_folds,
                         c_values=tuple(section.c_values), gamma_scales=tuple(section.gamma_scales), seed=section.seed)
    run_cfg = FitRun(filters=section.filters, examples=section.report_examples, memory_mb=section.kernel_memory_mb,
                     device="cuda" if torch.cuda.is_available() else "cpu")
    result = fit_filters(args.labels, args.embeddings, args.output, options, run_cfg)
    print(summary_table(result))
    if args.json:
        print(json.dumps(result))
    sys.stdout.flush()
    return 0


def summary_table(result: dict) -> str:
    head = f"{'filter':<12}{'threshold':>11}{'FNR':>8}{'FNR 95% bound':>15}{'held-out +':>12}{'removed':>9}"
    lines = [head, "-" * len(head)]
    for name, f in result["filters"].items():
        lines.append(f"{name:<12}{f['threshold']:>11.4f}{f['fnr']:>8.2%}{f['fnr_upper_95']:>15.2%}"
                     f"{f['held_out_positives']:>12}{f['removed_fraction']:>9.2%}")
    return "\n".join(lines)
