"""`glide config show CONFIG`: print the resolved (validated, defaults filled) config."""
from __future__ import annotations

from pipeline.config import load_config, to_yaml


def register(subparsers, common) -> None:
    p = subparsers.add_parser("config", parents=[common], help="inspect pipeline configs",
                              description="Inspect pipeline configs.")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", parents=[common], help="print the resolved config as YAML",
                          description="Validate CONFIG and print it with every default filled in.")
    show.add_argument("config", metavar="CONFIG", help="pipeline config (YAML)")
    show.set_defaults(func=run_show)


def run_show(args) -> int:
    print(to_yaml(load_config(args.config)), end="")
    return 0
