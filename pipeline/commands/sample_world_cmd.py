"""`glide sample-world -o DIR`: generate the synthetic captioned world, optionally serve it over HTTP."""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "sample-world", parents=[common], help="generate (and serve) the synthetic captioned image world",
        description="Generate a synthetic captioned image world (shapes on backgrounds, plus stand-ins "
                    "for people, violence and hate symbols with ground truth in DIR/truth.parquet). "
                    "With --serve, serve it on 127.0.0.1 and write DIR/urls.parquet for `glide ingest`.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="world directory (created)")
    add_config_option(p)
    p.add_argument("--count", type=int, default=None, metavar="N", help="number of images")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed")
    p.add_argument("--image-size", type=int, default=None, metavar="PX", help="image side in pixels")
    p.add_argument("--max-shapes", type=int, default=None, metavar="K",
                   help="most shapes per scene (1: one big shape per image)")
    p.add_argument("--serve", action="store_true", help="serve the world over HTTP until Ctrl-C")
    p.add_argument("--port", type=int, default=None, metavar="P", help="port to serve on (0: any free port)")
    p.set_defaults(func=run)


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    import signal
    import threading

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    forever = threading.Event()
    while not forever.wait(3600):
        pass


def run(args: argparse.Namespace) -> int:
    from pipeline.sample_world import BAD_ROW_KINDS, generate_world, write_url_list

    _, cfg = load_section(args, "sample_world", {
        "count": args.count, "seed": args.seed, "image_size": args.image_size,
        "max_shapes": args.max_shapes, "port": args.port,
    })
    info = generate_world(cfg, args.output, progress=True)
    cats = ", ".join(f"{k} {v}" for k, v in info.categories.items())
    fmts = ", ".join(f"{v} {k}" for k, v in info.formats.items())
    what = "generated" if info.generated else "already present (same config), kept"
    print(f"sample world {what}: {info.count} images ({fmts}), {cfg.image_size}px, in {info.root} "
          f"({info.seconds:.1f} s)")
    print(f"categories: {cats}")
    print(f"truth table: {info.truth_path}")
    print(f"preview: {info.root / 'index.html'}")
    if not args.serve:
        return 0

    from pipeline.sample_server import SampleWorldServer

    server = SampleWorldServer(info.root, host=cfg.host, port=cfg.port, slow_seconds=cfg.slow_seconds,
                               oversized_side=cfg.oversized_side)
    with server:
        try:  # Ctrl-C any time from here on is the normal way to stop: exit 0
            urls = write_url_list(info.root, server.base_url, bad_rows=cfg.bad_rows)
            n_bad = len(BAD_ROW_KINDS) if cfg.bad_rows else 0
            print(f"url list: {urls} ({info.count + n_bad} rows, {n_bad} bad)")
            print(f"serving {server.base_url} (Ctrl-C to stop)", flush=True)
            _wait_for_interrupt()
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0
