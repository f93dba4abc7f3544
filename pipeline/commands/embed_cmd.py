"""`glide embed DATASET -o DATASET_EMB [--clip MODEL]`: the paper's CLIP image features for every pair."""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "embed", parents=[common], help="add the three-crop CLIP embedding of every pair (clip_embedding column)",
        description="Embed every image of a finished DATASET as in the GLIDE paper: resize the smaller side to the "
                    "CLIP's input size, three square crops along the longer side (both ends and the middle), the "
                    "CLIP image embedding of each, mean-pooled and L2-normalised, stored as float16. Every other "
                    "column is carried over; an image that does not decode becomes a decode_error reject. The "
                    "CLIP is loaded once per Ray actor (one GPU each where the cluster has GPUs). Rerun the same "
                    "command to resume an interrupted run.",
    )
    p.add_argument("dataset", metavar="DATASET", help="finished input dataset (folder or URI with manifest.json)")
    p.add_argument("-o", "--output", required=True, metavar="DATASET_EMB", help="output dataset folder or URI")
    add_config_option(p)
    p.add_argument("--clip", default=None, metavar="MODEL",
                   help="ARCH=WEIGHTS_FILE (an open_clip architecture, e.g. ViT-B-16, or its model config .json, "
                        "with a local weights file; OpenAI weights: ViT-B-16-quickgelu=FILE), or a clean CLIP "
                        "checkpoint or run folder trained here (glide train clip --clip-mode clean)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="pairs per batch, three crops each (default: 32): one forward pass on a GPU, "
                        "cache-sized parts of it on a CPU")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="most Ray actors holding the model")
    p.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                   help="CPUs per actor (default: 1; on a GPU cluster the CPUs per GPU, at most 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.embed.stage import run_embed

    flags = {"clip": args.clip, "batch_size": args.batch_size, "workers": args.workers,
             "cpus_per_worker": args.cpus_per_worker}
    config, section = load_section(args, "embed", flags)
    run_embed(args.dataset, args.output, section, config.ray)
    return 0
