"""`glide serve`: the web app (the labelling page and its admin page) over a labels database.

    glide serve --db DB [--dataset DATASET_EMB] [--filters FILTERS] [--host 127.0.0.1] [--port N] [--admin]
"""
from __future__ import annotations

import argparse

from pipeline.commands.common import add_config_option, load_section


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "serve", parents=[common], help="the web app: the labelling page and its admin page",
        description="Serve the labelling page (one pair at a time, keys y / n / s, undo with u) and the admin "
                    "page (queues, progress, agreement, gold accuracy, export) over the labels database the "
                    "filter stages use. Raters sign in with the link `glide label raters add NAME` prints; "
                    "--admin prints the admin link. Serves on 127.0.0.1 unless told otherwise.")
    p.add_argument("--db", default=None, metavar="DB",
                   help="labels database: a path (SQLite file) or an SQLAlchemy URL (default: label.db of the config)")
    p.add_argument("--dataset", default=None, metavar="DATASET_EMB",
                   help="embeddings dataset the admin page queues pairs from (queues name their own dataset too)")
    p.add_argument("--filters", default=None, metavar="FILTERS",
                   help="current filters folder (glide fit-filters): the admin page's active-learning queues")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, metavar="N", help="port (default 8765; 0: any free port)")
    p.add_argument("--url", default=None, metavar="URL",
                   help="the app's address as raters reach it, for printed links (default http://HOST:PORT)")
    p.add_argument("--admin", action="store_true", help="print a fresh admin sign-in link (replaces the last one)")
    p.add_argument("--lease-s", type=float, default=None, metavar="S",
                   help="seconds an item stays with the rater it was handed to (default 600)")
    p.add_argument("--gold-every", type=int, default=None, metavar="N",
                   help="one gold item in N pairs shown (default 10; 0: none)")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shards import UserError

    config, serve = load_section(args, "serve", {"host": args.host, "port": args.port, "url": args.url,
                                                 "dataset": args.dataset, "filters": args.filters,
                                                 "lease_s": args.lease_s, "gold_every": args.gold_every})
    db = args.db or config.label.db
    if not db:
        raise UserError("--db: give the labels database (a path or an SQLAlchemy URL), or set label.db in the config")
    if serve.dataset:
        import shards as sh

        if not sh.list_shards(serve.dataset):
            raise UserError(f"--dataset {serve.dataset}: no shards (is it a dataset folder?)")
    if serve.filters:
        from filtering.filter_files import load_filters

        load_filters(serve.filters)  # a bad folder is one line now, not a failed request later
    from pipeline.webapp.context import ServeSettings
    from pipeline.webapp.links import base_url
    from pipeline.webapp.server import serve as run_server

    settings = ServeSettings(db=db, dataset=_absolute(serve.dataset), filters=_absolute(serve.filters),
                             lease_s=serve.lease_s, gold_every=serve.gold_every,
                             busy_timeout_s=config.label.busy_timeout_s,
                             secure_cookies=(serve.url or "").startswith("https://"))
    return run_server(settings, host=serve.host, port=serve.port, admin=args.admin,
                      base_url=lambda port: base_url(serve, port))


def _absolute(path):
    import os

    return path if path is None or "://" in path else os.path.abspath(path)
