"""`build_train_dataset`: a Ray Data stream of decoded training rows from the Arrow shards.

    plan (one row per shard still to read, in stream order)
      -> read_shard_rows   one task per shard, streaming its record batches (never a whole dataset)
      -> DecodeBatch       decode + random crop / resize, in parallel over the CPU workers
      -> rows: uid, caption, epoch, shard, ok, image uint8 [S, S, 3]

How the data position is known on each worker (resume at shard granularity):
- The stream covers `num_epochs` epochs from `start_position`; epoch e reads the shards in
  `epoch_order(n, seed, e)`, and every row carries its (epoch, shard) key (shard = index in that
  order), so keys never decrease along the stream.
- Ray Train gives each worker `ray.train.get_dataset_shard("train")`, a `streaming_split` of this
  one stream. With `train_data_config()` (order preserved, no locality reordering) the split
  hands blocks out first-in first-out, so each worker receives a subsequence of the stream in
  stream order. A worker's position after a batch is the smallest key it still holds (shuffle
  buffer) or has just read; `agree_position` (minimum over workers) is then a point no worker has
  unconsumed rows behind: the position to checkpoint.
- On resume the trainer builds the stream from the checkpoint's position; `iter_train_batches`
  also skips rows before `start_position`, which keeps a restart (Ray Train FailureConfig, same
  dataset object) correct at the cost of re-reading the skipped shards.
"""
from __future__ import annotations

import pyarrow as pa

from shards import UserError, iter_shard_batches, list_shards
from training.data.decode import DecodeBatch
from training.data.loop_throttle import pace_scheduling_loop
from training.data.position import DataPosition, normalise, remaining_plan
from training.data.task import TrainTask

COLUMNS = ["uid", "caption", "image"]


def list_train_shards(data_dir: str) -> list[str]:
    """The dataset's shard paths (manifest order); UserError naming `data_dir` if there are none."""
    paths = list_shards(str(data_dir))
    if not paths:
        raise UserError(f"{data_dir}: no shards (expected {data_dir}/shards/part-*.arrow)")
    return paths


def read_shard_rows(plan: pa.Table):
    """map_batches generator: for each plan row, yield the shard's record batches (projected to
    COLUMNS) with its key."""
    for entry in plan.to_pylist():
        for batch in iter_shard_batches(entry["path"], COLUMNS):
            n = batch.num_rows
            if n == 0:
                continue
            yield pa.table({
                **{name: batch.column(name) for name in COLUMNS},
                "epoch": pa.array([entry["epoch"]] * n, pa.int64()),
                "shard": pa.array([entry["shard"]] * n, pa.int64()),
            })


def build_train_dataset(data_dir: str, task: TrainTask, *, start_position: DataPosition | None = None,
                        num_epochs: int = 1):
    """A `ray.data.Dataset` of decoded rows: the shards of `num_epochs` epochs from `start_position`.

    Lazy and streaming: reading starts when a consumer iterates. Row columns: uid, caption,
    epoch, shard (the row's key, see module doc), ok (False: undecodable image, to be counted and
    skipped), image uint8 [S, S, 3] with S = task.image_size.
    """
    import ray

    if num_epochs < 1:
        raise UserError(f"num_epochs {num_epochs}: must be >= 1")
    paths = list_train_shards(data_dir)
    start = normalise(start_position or DataPosition(), len(paths))
    plan = remaining_plan(paths, task.seed, start, num_epochs)
    ds = ray.data.from_items(plan, override_num_blocks=len(plan))
    ds = ds.map_batches(read_shard_rows, batch_size=1, batch_format="pyarrow")
    ds = ds.map_batches(DecodeBatch(task.image_size, task.random_crop, task.seed),
                        batch_size=task.decode_batch_size, batch_format="pyarrow")
    # Keys must reach consumers in stream order for positions to mean something (module doc).
    ds.context.execution_options.preserve_order = True
    pace_scheduling_loop(ds, task.data_loop_period)
    return ds


def train_data_config():
    """The `ray.train.DataConfig` to give `TorchTrainer(dataset_config=...)` for dataset "train".

    Ray Train replaces a dataset's execution options with its own; this keeps stream order and
    turns off locality-based reordering of blocks, which `agree_position` relies on.
    """
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"],
                      execution_options={"train": ExecutionOptions(preserve_order=True)},
                      enable_shard_locality=False)
