"""Start or join Ray: embedded local Ray by default, a cluster when an address is given.

Ray's own log lines stay out of the user's terminal unless `log_to_driver` (set by --debug).
"""
from __future__ import annotations

import contextlib
import logging
import os

from pipeline.config import RayConfig


def init_ray(cfg: RayConfig) -> bool:
    """Initialise Ray if it is not already; returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    quiet = not cfg.log_to_driver
    common = dict(
        log_to_driver=cfg.log_to_driver,
        logging_level=logging.ERROR if quiet else logging.INFO,
        configure_logging=True,
    )
    if quiet:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, **common)
    else:
        # The embedded Ray: no dashboard unless asked, and then only on loopback.
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.dashboard,
            dashboard_host="127.0.0.1",
            **common,
        )
    if quiet:
        _quiet_ray_data()
    return True


def _quiet_ray_data() -> None:
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
    except Exception:  # older Ray without these knobs: noise only, never fatal
        pass


@contextlib.contextmanager
def ray_session(cfg: RayConfig):
    """Context manager: Ray is up inside; shut down on exit if we started it."""
    import ray

    started = init_ray(cfg)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
