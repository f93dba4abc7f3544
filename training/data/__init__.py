"""Training data: Arrow shards -> Ray Data stream -> per-worker tensor batches, resumable by shard.

    task = TrainTask.for_model("base", model_cfg, cfg_dropout=0.2)
    ds = build_train_dataset(data_dir, task, start_position=pos, num_epochs=E)   # driver
    TorchTrainer(..., datasets={"train": ds}, dataset_config=train_data_config())
    # on each worker:
    it = iter_train_batches(ray.train.get_dataset_shard("train"), B, task, tokenizer, pos)
    for batch, position in it: ...   # checkpoint agree_position(position); log it.corrupt_rows
"""
from training.data.batches import TrainBatches, caption_dropped, iter_train_batches
from training.data.dataset import build_train_dataset, list_train_shards, train_data_config
from training.data.masks import random_keep_mask
from training.data.position import DataPosition, agree_position, epoch_order, remaining_plan
from training.data.task import InpaintMaskSettings, TrainTask

__all__ = [
    "TrainTask", "InpaintMaskSettings", "DataPosition", "build_train_dataset", "iter_train_batches",
    "TrainBatches", "train_data_config", "agree_position", "epoch_order", "remaining_plan",
    "list_train_shards", "random_keep_mask", "caption_dropped",
]
