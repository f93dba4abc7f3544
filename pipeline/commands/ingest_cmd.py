"""`glide ingest URL_LIST... -o DATASET`: crawl image URL lists into Arrow pair shards."""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "ingest", parents=[common], help="crawl URL lists into Arrow pair shards (img2dataset on Ray)",
        description="Download the images of URL lists (parquet/csv/tsv/jsonl, optionally .gz, local or "
                    "fsspec URIs), resize them and write DATASET/shards, DATASET/rejects and "
                    "DATASET/manifest.json. Rerun the same command to resume an interrupted run. "
                    "Transient failures (timeouts, 5xx, 429, dropped connections) are retried with backoff; "
                    "on a finished dataset, --retry-transient re-crawls the rejects that still failed that way.",
    )
    p.add_argument("lists", nargs="*", metavar="URL_LIST",
                   help="URL list file(s) or folder(s) (not needed with --retry-transient)")
    p.add_argument("-o", "--output", required=True, metavar="DATASET", help="output dataset folder or URI")
    add_config_option(p)
    p.add_argument("--url-col", default=None, help="column with the image URL (default: url)")
    p.add_argument("--caption-col", default=None, help="column with the caption (default: caption)")
    p.add_argument("--input-format", default=None, choices=["parquet", "csv", "tsv", "jsonl"],
                   help="format of the lists (default: from the extension)")
    p.add_argument("--image-size", type=int, default=None, help="output size of the smaller side (default: 256)")
    p.add_argument("--resize-mode", default=None, choices=["keep_ratio", "center_crop", "no"],
                   help="keep_ratio (default), center_crop (square) or no")
    p.add_argument("--output-format", default=None, choices=["jpeg", "png", "webp"], help="stored encoding")
    p.add_argument("--shard-size", type=int, default=None, help="pairs per shard (default: 10000)")
    p.add_argument("--threads", type=int, default=None, help="download threads per Ray task (default: 32)")
    p.add_argument("--timeout", type=float, default=None, help="total seconds per request (default: 10)")
    p.add_argument("--retries", type=int, default=None,
                   help="retries per URL of transient failures (default: 2)")
    p.add_argument("--retry-backoff", type=float, default=None,
                   help="seconds before the first retry, doubling each time, jittered (default: 1)")
    p.add_argument("--retry-transient", action="store_true",
                   help="on a finished DATASET: re-crawl only the rejects whose reason is transient "
                        "(timeout, http_5xx, http_429, connection_error); the ones that now succeed move into "
                        "new shards")
    p.add_argument("--max-image-bytes", type=int, default=None, help="largest download accepted")
    p.add_argument("--allow-private-networks", action="store_true", default=None,
                   help="allow hosts on private/loopback/link-local addresses (off by default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.ingest.retry_transient import retry_transient
    from pipeline.ingest.stage import run_ingest
    from shards import UserError

    if not args.lists and not args.retry_transient:
        raise UserError("glide ingest: give one or more URL lists (or --retry-transient on a finished dataset)")
    flags = {
        "url_col": args.url_col, "caption_col": args.caption_col, "input_format": args.input_format,
        "image_size": args.image_size, "resize_mode": args.resize_mode, "output_format": args.output_format,
        "shard_size": args.shard_size, "threads": args.threads, "timeout": args.timeout,
        "retries": args.retries, "retry_backoff": args.retry_backoff, "max_image_bytes": args.max_image_bytes,
        "allow_private_networks": args.allow_private_networks,
    }
    config, section = load_section(args, "ingest", flags)
    if args.retry_transient:
        retry_transient(args.output, section, config.ray)
    else:
        run_ingest(args.lists, args.output, section, config.ray)
    return 0
