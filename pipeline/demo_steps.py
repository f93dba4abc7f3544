"""The demo's building block: run one `glide` command as a user would type it, printed first, timed.

Shared by `make demo` (pipeline.demo, pipeline.demo_filters), `make demo-checkpoints`
(pipeline.demo_checkpoints) and the held-out filter check (benchmarks.filter_quality).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "checkpoints" / "demo"  # made by `make demo-checkpoints` (pipeline/demo_checkpoints.py)
WORLD_CONFIG = REPO / "configs" / "sample-world.yaml"  # the demo's sample world and ingest


@dataclass
class Step:
    """One `glide` command the demo ran, as a user would type it, and how long it took."""
    command: str
    wall_s: float


def glide(*argv, capture: bool = False) -> Step | tuple[Step, str]:
    """Run `glide ARGV...` in the repository (printed first); exit on failure. With `capture`, its
    stdout is also returned (and still shown)."""
    argv = [in_repo(a) for a in argv]
    line = f"glide {shlex.join(argv)}"
    print(f"\n$ {line}", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], cwd=REPO,
                            stdout=subprocess.PIPE if capture else None, text=capture)
    if capture:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: `glide {argv[0]}` failed with exit code {result.returncode}")
    step = Step(line, round(time.perf_counter() - t0, 1))
    return (step, result.stdout) if capture else step


def in_repo(arg) -> str:
    """An argument as a user in the checkout types it: paths under the repository relative to it."""
    path = Path(str(arg))
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(arg)
