"""Where a run is in its data: the shard order of each epoch and `DataPosition`.

The order of shards in epoch e is a pure function of (seed, e), so a position is just
(epoch, shard): "the first `shard` shards of epoch `epoch`'s order are fully consumed".
Resuming builds the stream from that point (`remaining_plan`); rows of a shard that was only
partly consumed are seen again (resume granularity: one shard).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def derived_seed(*parts) -> int:
    """A 64-bit seed from any printable parts (stable across processes and Python versions)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def derived_uniform(*parts) -> float:
    """A number in [0, 1) that is a pure function of `parts`."""
    return derived_seed(*parts) / 2.0**64


def row_rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derived_seed(*parts))


@dataclass(frozen=True, order=True)
class DataPosition:
    """Shards [0, shard) of epoch `epoch`'s order are consumed; `order=True`: compare by (epoch, shard)."""

    epoch: int = 0
    shard: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard}

    @classmethod
    def from_dict(cls, d: dict | None) -> "DataPosition":
        d = d or {}
        return cls(int(d.get("epoch", 0)), int(d.get("shard", 0)))


def epoch_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """Indices into the dataset's shard list in the order epoch `epoch` reads them."""
    return [int(i) for i in row_rng(seed, "shard-order", epoch).permutation(num_shards)]


def remaining_plan(shard_paths: list[str], seed: int, start: DataPosition | None,
                   num_epochs: int) -> list[dict]:
    """The shards still to read, in stream order: [{"epoch", "shard" (index in the epoch's order), "path"}].

    Covers epochs start.epoch .. start.epoch + num_epochs - 1, the first one from start.shard.
    """
    start = start or DataPosition()
    n = len(shard_paths)
    plan = []
    for epoch in range(start.epoch, start.epoch + num_epochs):
        order = epoch_order(n, seed, epoch)
        first = start.shard if epoch == start.epoch else 0
        plan.extend({"epoch": epoch, "shard": k, "path": shard_paths[order[k]]} for k in range(first, n))
    return plan


def normalise(position: DataPosition, num_shards: int) -> DataPosition:
    """(e, num_shards) is the same place as (e + 1, 0)."""
    if num_shards and position.shard >= num_shards:
        return DataPosition(position.epoch + 1, 0)
    return position


def agree_position(position: DataPosition) -> DataPosition:
    """The position every worker of a torch.distributed group agrees on: the minimum over workers.

    Each worker only knows the rows it consumed; with in-order dispatch (see
    `training.data.dataset.train_data_config`) every row a worker has not yet consumed comes
    at or after its own position, so the minimum over workers is a position at which no
    unconsumed row lies behind. A collective: every rank must call it (e.g. when checkpointing).
    Without an initialised process group it returns `position` unchanged.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return position
    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    key = torch.tensor([position.epoch * 2**31 + position.shard], dtype=torch.int64, device=device)
    dist.all_reduce(key, op=dist.ReduceOp.MIN)
    value = int(key.item())
    return DataPosition(value // 2**31, value % 2**31)
