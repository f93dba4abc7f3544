"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse

from pipeline.config import PipelineConfig, load_config, override


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="CONFIG", default=None,
                        help="pipeline config (YAML); flags given here override it")


def model_kind_argument(text: str):
    """argparse type of a KIND argument: a ModelKind, or an alias (e.g. inpaint = base-inpaint)."""
    from shards import UserError
    from training.model_kind import parse_model_kind

    try:
        return parse_model_kind(text, "KIND")
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def load_section(args: argparse.Namespace, section: str, flags: dict) -> tuple[PipelineConfig, object]:
    """Load the config named by --config and apply CLI `flags` (None = not given) to `section`."""
    config = load_config(args.config)
    override(getattr(config, section), flags)
    if getattr(args, "ray_address", None):
        config.ray.address = args.ray_address
    if getattr(args, "debug", False):
        config.ray.log_to_driver = True
    return config, getattr(config, section)
