"""Pace Ray Data's scheduling loop while a training stream is consumed.

When the trainer is the bottleneck the streaming executor (in Ray Train's SplitCoordinator actor) is
mostly backpressured, yet its loop keeps stepping: each step re-runs the resource accounting
(ResourceManager.update_usages, budgets, backpressure policies) and its `ray.wait` returns at once
whenever every task in flight already has output waiting. Profiled with py-spy during `glide train
clip` on 2 cores, that loop held one core at 50-90%, a core the trainer and the decode tasks needed.
Sleeping out the rest of a minimum step period gives that core back; every step still collects all
finished tasks and dispatches as many as backpressure allows, so data rates far above the trainer's
are kept (benchmarks/data_loop.py measures the two side by side).

The period travels in the dataset's DataContext (`set_config(PERIOD_KEY, s)`), so it reaches the
executor wherever Ray runs it (the coordinator actor, another node).
"""
from __future__ import annotations

import time

from ray.data._internal.execution.execution_callback import ExecutionCallback

PERIOD_KEY = "glide_min_scheduling_step_s"


class SchedulingLoopThrottle(ExecutionCallback):
    """Each scheduling-loop step takes at least the context's PERIOD_KEY seconds (0 or unset: no pacing)."""

    def __init__(self) -> None:
        self._period = 0.0
        self._last = time.perf_counter()

    def before_execution_starts(self, executor) -> None:
        self._period = float(executor._data_context.get_config(PERIOD_KEY, 0.0) or 0.0)
        self._last = time.perf_counter()

    def on_execution_step(self, executor) -> None:
        wait = self._period - (time.perf_counter() - self._last)
        if wait > 0:
            time.sleep(wait)
        self._last = time.perf_counter()


def pace_scheduling_loop(dataset, period_s: float) -> None:
    """Make `dataset`'s executions step at most once per `period_s` seconds (0: Ray's own pace)."""
    ctx = dataset.context
    ctx.set_config(PERIOD_KEY, float(period_s))
    if period_s > 0 and SchedulingLoopThrottle not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes = [*ctx.custom_execution_callback_classes, SchedulingLoopThrottle]
