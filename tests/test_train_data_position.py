"""Data positions: the shard plan a resumed run reads, and the position workers agree on."""
from __future__ import annotations

import pytest

from training.data import DataPosition, agree_position, epoch_order, remaining_plan
from training.data.position import normalise


def test_plan_resumes_mid_epoch_and_continues_into_the_next_epochs_orders():
    paths = [f"part-{i:05d}.arrow" for i in range(5)]
    plan = remaining_plan(paths, seed=3, start=DataPosition(1, 2), num_epochs=2)
    assert [(p["epoch"], p["shard"]) for p in plan] == [(1, 2), (1, 3), (1, 4)] + [(2, k) for k in range(5)]
    order1, order2 = epoch_order(5, 3, 1), epoch_order(5, 3, 2)
    assert [p["path"] for p in plan] == [paths[i] for i in order1[2:] + order2]
    assert normalise(DataPosition(1, 5), 5) == DataPosition(2, 0)
    assert DataPosition.from_dict(DataPosition(4, 1).to_dict()) == DataPosition(4, 1)


def _agree(rank: int, port: int, positions: list, results) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(positions))
    try:
        results[rank] = agree_position(DataPosition(*positions[rank])).to_dict()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_workers_agree_on_the_smallest_position():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_agree, args=(port, [(2, 0), (1, 4)], results), nprocs=2, join=True)
    assert dict(results) == {0: {"epoch": 1, "shard": 4}, 1: {"epoch": 1, "shard": 4}}  # across epochs
    assert agree_position(DataPosition(2, 0)) == DataPosition(2, 0)  # no process group: unchanged
