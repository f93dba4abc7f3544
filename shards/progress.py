"""The one progress reporter for stages, the trainer and the samplers.

On a terminal it is a tqdm bar. Anywhere else (a log file, `make demo > log`, Ray Jobs logs)
it prints a plain line every `interval` seconds: done/total, rate and ETA. A carriage-return
bar there would fill the log with thousands of redraws.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts work done; `update(n)` adds, `set(done)` sets, `note(**fields)` adds text to the line.

    Use as a context manager, or call `close()`: it prints the final line (always, also in
    plain mode) with the elapsed time and the mean rate. `initial`: work done before this
    process started (a resumed run), counted in done/total but not in the rate.
    """

    def __init__(self, desc: str, total: Optional[int] = None, *, unit: str = "rows",
                 stream: Optional[TextIO] = None, interval: float = 10.0, tty: Optional[bool] = None,
                 initial: int = 0):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.initial = self.done = initial
        self.fields: dict[str, object] = {}
        self.start = time.monotonic()
        self._last_line = self.start
        self._closed = False
        self._bar = None
        if tty if tty is not None else _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True,
                             mininterval=0.5, smoothing=0.1, initial=initial)

    # -- counting
    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        step = done - self.done
        self.done = done
        if self._bar is not None:
            if step:
                self._bar.update(step)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._write(self.line(now))

    def note(self, **fields) -> None:
        """Extra fields shown after the counts (loss, shards done, retries)."""
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.set_postfix({k: v for k, v in self.fields.items()}, refresh=False)

    # -- text
    def rate(self, now: Optional[float] = None) -> float:
        return (self.done - self.initial) / max((now or time.monotonic()) - self.start, 1e-9)

    def line(self, now: Optional[float] = None, final: bool = False) -> str:
        now = now or time.monotonic()
        rate = self.rate(now)
        elapsed = now - self.start
        if self.total:
            pct = 100.0 * self.done / self.total
            text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%)"
        else:
            text = f"{self.desc}: {self.done:,} {self.unit}"
        text += f", {rate:,.1f} {self.unit}/s"
        if final:
            text += f", {format_seconds(elapsed)} elapsed"
        elif self.total and rate > 0 and self.done < self.total:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        extra = ", ".join(f"{k} {v}" for k, v in self.fields.items())
        return text + (f", {extra}" if extra else "")

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._write(self.line(final=True))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
