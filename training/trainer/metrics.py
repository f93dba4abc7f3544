"""Training metrics: device peak FLOP/s for MFU, rank 0's metric files, the driver's console.

Rank 0 writes every logged step to RUN/metrics.jsonl (one JSON object a line) and to TensorBoard
event files in RUN/tensorboard/, and sends it to the driver through a Ray queue; the driver prints
one metrics line per logged step under the project's one progress reporter (`DriverProgress`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from shards import Progress

# Dense half-precision (bf16/fp16) tensor-core peaks, TFLOP/s, and float32 (TF32 where it exists).
_GPU_PEAK_TFLOPS = {
    "H100": (989.0, 494.0), "A100": (312.0, 156.0), "A10G": (125.0, 62.5), "A10": (125.0, 62.5),
    "L40S": (362.0, 183.0), "L4": (121.0, 60.0), "V100": (125.0, 15.7), "T4": (65.0, 8.1),
    "RTX 4090": (165.0, 82.6), "RTX 3090": (71.0, 35.6), "A6000": (155.0, 77.4),
}


def device_peak_tflops(device_type: str, precision: str, override: float | None = None) -> float | None:
    """Peak TFLOP/s of this worker's device: the override, a known GPU, or a CPU estimate
    (threads x clock x FLOPs per cycle of its vector units). None if unknown."""
    if override:
        return float(override)
    if device_type == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        for key, (half, single) in _GPU_PEAK_TFLOPS.items():
            if key in name:
                return half if precision in ("bf16", "fp16") else single
        return None
    return _cpu_peak_tflops()


def _cpu_peak_tflops() -> float | None:
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    # FMA on two 256-bit units: 32 fp32 FLOPs/cycle; AVX-512: 64.
    per_cycle = 64 if " avx512f" in flags else 32 if " fma" in flags else 8
    return torch.get_num_threads() * max(mhz) * 1e6 * per_cycle / 1e12


class MetricsWriter:
    """Rank 0's metric sinks: RUN/metrics.jsonl, RUN/tensorboard/, and the driver's queue."""

    def __init__(self, run_dir: str | os.PathLike, queue=None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self.queue = queue

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value == value:  # skip NaN
                self.tb.add_scalar(f"train/{key}", value, step)
        self.tb.flush()
        self.send(record)

    def send(self, record: dict) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(record)
        except Exception:  # a full or gone queue only costs console lines, never the run
            pass

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()


def format_progress(record: dict, max_steps: int) -> str:
    """One console line for a metrics record."""
    if record.get("event"):
        return f"train: {record['event']}"
    step = record["step"]
    parts = [f"step {step}/{max_steps}", f"loss {record.get('loss', float('nan')):.4f}"]
    quart = [record.get(f"loss_q{q}") for q in range(4)]
    if all(isinstance(v, float) for v in quart):
        parts.append("q0-3 " + "/".join(f"{v:.3f}" for v in quart))
    for key, fmt in (("grad_norm", "grad {:.3g}"), ("lr", "lr {:.2e}"), ("loss_scale", "scale {:g}"),
                     ("images_per_s", "{:.1f} img/s"), ("mfu", "MFU {:.2%}")):
        if isinstance(record.get(key), (int, float)):
            parts.append(fmt.format(record[key]))
    return "train: " + "  ".join(parts)


class DriverProgress:
    """Driver-side thread: what rank 0 puts on `queue`, on the console until `stop()`.

    A shards.Progress counts optimizer steps: a tqdm bar on a terminal, else a plain line every
    `interval` seconds (step/max_steps, steps/s, ETA, loss, img/s), never carriage-return redraws.
    Each logged step's metrics line and each event ("resumed", "saved") is printed above it.
    """

    def __init__(self, queue, max_steps: int, start_step: int = 0, stream=None, interval: float = 10.0):
        self.queue, self.max_steps = queue, max_steps
        self.progress = Progress("train", total=max_steps, unit="steps", stream=stream, interval=interval,
                                 initial=start_step)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-progress", daemon=True)

    def start(self) -> "DriverProgress":
        self._thread.start()
        return self

    def show(self, record: dict) -> None:
        from tqdm import tqdm

        tqdm.write(format_progress(record, self.max_steps), file=self.progress.stream)  # above a bar, if any
        if record.get("event") or "step" not in record:
            return
        fields = {"loss": f"{record['loss']:.4f}"} if isinstance(record.get("loss"), float) else {}
        if isinstance(record.get("images_per_s"), (int, float)):
            fields["img/s"] = f"{record['images_per_s']:.1f}"
        self.progress.note(**fields)
        self.progress.set(int(record["step"]))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain(timeout=0.5)

    def _drain(self, timeout: float) -> None:
        try:
            records = [self.queue.get(timeout=timeout)]
            while not self.queue.empty():
                records.append(self.queue.get_nowait())
        except Exception:  # queue.Empty, or the queue actor is gone at shutdown
            return
        for record in records:
            self.show(record)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            while not self.queue.empty():
                self.show(self.queue.get_nowait())
        except Exception:
            pass
        self.progress.close()
