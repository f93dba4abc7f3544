"""`glide filter DATASET_EMB --filters FILTERS -o DATASET_FILTERED`: apply the safety filters."""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "filter", parents=[common], help="apply the safety filters: kept pairs as filtered shards, the rest rejects",
        description="Score every pair's CLIP embedding with every filter of FILTERS (a batched kernel in torch, on "
                    "GPU actors when the cluster has GPUs). Pairs no filter fires on are written to "
                    "DATASET_FILTERED/shards with a score_<filter> column each; the others to "
                    "DATASET_FILTERED/rejects as filtered_<filter> (the first that fires), with its score. "
                    "Writes DATASET_FILTERED/report/index.html. Rerun the same command to resume.",
    )
    p.add_argument("dataset", metavar="DATASET_EMB", help="dataset with a clip_embedding column (glide embed)")
    p.add_argument("--filters", required=True, metavar="FILTERS", help="filters folder (glide fit-filters)")
    p.add_argument("-o", "--output", required=True, metavar="DATASET_FILTERED", help="output dataset folder or URI")
    add_config_option(p)
    p.add_argument("--workers", type=int, default=None, help="most Ray actors holding the filters")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.filter_stage import run_filter

    config, section = load_section(args, "filter", {"workers": args.workers})
    run_filter(args.dataset, args.filters, args.output, section, config.ray)
    return 0
