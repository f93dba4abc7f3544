"""Training data pipeline on real Arrow shards of the sample world, through real Ray Data."""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import SampleWorldConfig
from pipeline.sample_world import generate_world
from shards import PAIRS_SCHEMA, compute_uid, join, shard_name, write_table
from training.data import (
    DataPosition, TrainTask, build_train_dataset, caption_dropped, epoch_order, iter_train_batches,
    random_keep_mask,
)
from training.data.position import row_rng
from training.tokenizers import build_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # real Ray Data (about 20 s for the module)

N_SHARDS, ROWS_PER_SHARD = 4, 12
CORRUPT = {(1, 3), (2, 7)}  # (shard file index, row): bytes that do not decode


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """4 shards x 12 sample-world rows (48 px images); two rows hold truncated, undecodable bytes."""
    root = tmp_path_factory.mktemp("train-data")
    world = generate_world(SampleWorldConfig(count=N_SHARDS * ROWS_PER_SHARD, image_size=48, seed=3),
                           root / "world")
    truth = pq.read_table(world.truth_path).to_pylist()
    dataset = str(root / "dataset")
    for s in range(N_SHARDS):
        rows = []
        for r in range(ROWS_PER_SHARD):
            t = truth[s * ROWS_PER_SHARD + r]
            data = (world.root / t["path"]).read_bytes()
            if (s, r) in CORRUPT:
                data = data[: len(data) // 3]  # a truncated download
            url = f"http://127.0.0.1/{t['path']}"
            rows.append({
                "uid": compute_uid(url, t["caption"]), "url": url, "caption": t["caption"], "image": data,
                "image_format": t["format"], "width": 48, "height": 48, "original_width": 48,
                "original_height": 48, "sha256": hashlib.sha256(data).hexdigest(), "source": f"urls:{s}:{r}",
            })
        write_table(join(dataset, "shards", shard_name(s)), pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
    return dataset


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer({"type": "clip"})


def test_base_batches_have_model_shapes_dtypes_and_ranges(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="base", image_size=32, text_ctx=16, cfg_dropout=0.0, seed=1)
    it = iter_train_batches(build_train_dataset(dataset_dir, task), 8, task, tokenizer)
    out = list(it)
    assert len(out) == (N_SHARDS * ROWS_PER_SHARD) // 8  # one batch per 8 rows read, corrupt or not
    batch, _ = out[0]
    assert set(batch) == {"x0", "tokens", "mask"}
    assert batch["x0"].shape == (8, 3, 32, 32) and batch["x0"].dtype.is_floating_point
    assert -1.0 <= batch["x0"].min() < 0 < batch["x0"].max() <= 1.0
    assert batch["tokens"].shape == (8, 16) and str(batch["tokens"].dtype) == "torch.int64"
    assert str(batch["mask"].dtype) == "torch.bool" and batch["mask"].any(dim=1).all()
    assert it.corrupt_rows == len(CORRUPT) and it.rows_read == N_SHARDS * ROWS_PER_SHARD


def test_corrupt_rows_are_counted_warned_and_never_trained_on(ray_local, dataset_dir, tokenizer, caplog):
    task = TrainTask(kind="base", image_size=32, text_ctx=16, cfg_dropout=0.0, shuffle_buffer=0)
    rows = build_train_dataset(dataset_dir, task).take_all()
    assert sum(not r["ok"] for r in rows) == len(CORRUPT)
    with caplog.at_level(logging.WARNING, logger="training.data.batches"):
        it = iter_train_batches(build_train_dataset(dataset_dir, task), 6, task, tokenizer)
        batches = [b for b, _ in it]
    assert it.corrupt_rows == len(CORRUPT)
    assert sum("corrupt row" in m for m in caplog.messages) == len(CORRUPT)
    # no all-zero (undecoded) image reaches a batch: zeros would be x0 == -1 everywhere
    for b in batches:
        assert (b["x0"].flatten(1) > -1.0).any(dim=1).all()


def test_caption_dropout_replaces_the_configured_fraction_with_empty_tokens(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="base", image_size=16, text_ctx=16, cfg_dropout=0.2, seed=5)
    decided = [caption_dropped(task, 0, f"{i:032x}") for i in range(4000)]
    assert abs(np.mean(decided) - 0.2) < 0.02
    assert decided == [caption_dropped(task, 0, f"{i:032x}") for i in range(4000)]  # deterministic
    it = iter_train_batches(build_train_dataset(dataset_dir, task), 8, task, tokenizer)
    empty = sum(int((~b["mask"].any(dim=1)).sum()) for b, _ in it)
    rows = N_SHARDS * ROWS_PER_SHARD
    assert 0 < empty < rows * 0.5  # about 20% of 48 rows, never all or none


def test_upsampler_gets_downsampled_low_res(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="upsampler", image_size=32, low_res_size=8, text_ctx=16, random_crop=False)
    batch, _ = next(iter_train_batches(build_train_dataset(dataset_dir, task), 4, task, tokenizer))
    import torch.nn.functional as F

    assert batch["low_res"].shape == (4, 3, 8, 8)
    # the low-res image is the training image, smaller: close to its area average
    area = F.avg_pool2d(batch["x0"], 4)
    assert (batch["low_res"] - area).abs().mean() < 0.1


def test_inpaint_masks_keep_known_region_and_mix_rectangles_and_strokes(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="inpaint", image_size=32, text_ctx=16)
    kinds = [random_keep_mask(row_rng(0, "mask", 0, i), 32, task.inpaint) for i in range(60)]
    assert {k for _, k in kinds} == {"rect", "stroke"}
    for mask, kind in kinds:
        erased = mask == 0
        assert 0 < erased.sum() < mask.size
        ys, xs = np.nonzero(erased)
        bbox = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        if kind == "stroke":  # a brush stroke covers only part of its bounding box
            assert erased.sum() < bbox
    one_rect, _ = random_keep_mask(np.random.default_rng(0), 32,
                                   type(task.inpaint)(rect_probability=1.0, max_rects=1))
    ys, xs = np.nonzero(one_rect == 0)
    assert (one_rect[ys.min():ys.max() + 1, xs.min():xs.max() + 1] == 0).all()  # a solid rectangle

    batch, _ = next(iter_train_batches(build_train_dataset(dataset_dir, task), 8, task, tokenizer))
    m = batch["inpaint_mask"]
    assert m.shape == (8, 1, 32, 32) and set(m.unique().tolist()) == {0.0, 1.0}
    assert (batch["inpaint_image"] == batch["x0"] * m).all()

    up = TrainTask(kind="upsampler-inpaint", image_size=32, low_res_size=8, text_ctx=16, random_crop=False)
    b, _ = next(iter_train_batches(build_train_dataset(dataset_dir, up), 4, up, tokenizer))
    import torch.nn.functional as F

    full_low = F.interpolate(b["x0"], size=(8, 8), mode="bicubic", antialias=True).clamp(-1, 1)
    assert (b["low_res"] - full_low).abs().max() < 1e-5  # the full low-res image, not masked
    assert (b["inpaint_image"][b["inpaint_mask"].expand_as(b["x0"]) == 0] == 0).all()


def test_clip_batches_are_images_and_tokens_without_dropout(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="clip", image_size=32, text_ctx=16, cfg_dropout=0.5)
    batch, _ = next(iter_train_batches(build_train_dataset(dataset_dir, task), 8, task, tokenizer))
    assert set(batch) == {"x0", "tokens", "mask", "text_keys", "described_keys"} and batch["mask"].any(dim=1).all()
    # every row's own text is among the texts true of its image: the loss's diagonal is a positive
    from training.data.caption_keys import positives_matrix
    assert positives_matrix(batch["described_keys"], batch["text_keys"]).diagonal().all()


def test_resume_from_a_position_reads_exactly_the_remaining_shards(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="base", image_size=16, text_ctx=16, seed=7, shuffle_buffer=0)
    orders = [epoch_order(N_SHARDS, 7, e) for e in range(4)]
    assert orders[0] == epoch_order(N_SHARDS, 7, 0) and len({tuple(o) for o in orders}) > 1  # reshuffled
    assert all(sorted(o) == list(range(N_SHARDS)) for o in orders)
    full = build_train_dataset(dataset_dir, task, num_epochs=2).take_all()
    keys = [(r["epoch"], r["shard"]) for r in full]
    assert keys == sorted(keys) and len(full) == 2 * N_SHARDS * ROWS_PER_SHARD  # stream order
    start = DataPosition(epoch=0, shard=3)
    resumed = build_train_dataset(dataset_dir, task, start_position=start, num_epochs=2).take_all()
    expected = [r["uid"] for r in full if (r["epoch"], r["shard"]) >= (0, 3)]
    assert [r["uid"] for r in resumed] == expected
    assert len(resumed) == (1 + N_SHARDS) * ROWS_PER_SHARD

    # positions reported during iteration never move backwards and end in the last shard;
    # a stream that starts earlier skips to start_position (a restarted worker)
    it = iter_train_batches(build_train_dataset(dataset_dir, task), 6, task, tokenizer,
                            start_position=DataPosition(0, 2))
    positions = [p for _, p in it]
    assert positions == sorted(positions) and positions[0] >= DataPosition(0, 2)
    assert positions[-1] == DataPosition(0, N_SHARDS - 1)
    assert it.skipped_rows == 2 * ROWS_PER_SHARD and it.rows_read == 2 * ROWS_PER_SHARD


def test_two_consumers_get_disjoint_complete_splits(ray_local, dataset_dir, tokenizer):
    task = TrainTask(kind="base", image_size=16, text_ctx=16, seed=2)
    ds = build_train_dataset(dataset_dir, task)
    a, b = ds.streaming_split(2, equal=True)  # what Ray Train does with datasets={"train": ds}
    import threading

    got, keys = {}, {}

    def consume(name, split):
        batches = list(split.iter_batches(batch_size=5, batch_format="numpy"))
        got[name] = [u for batch in batches for u in batch["uid"]]
        keys[name] = [(e, s) for batch in batches for e, s in zip(batch["epoch"], batch["shard"])]

    threads = [threading.Thread(target=consume, args=(n, s)) for n, s in (("a", a), ("b", b))]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert got["a"] and got["b"] and not set(got["a"]) & set(got["b"])
    all_uids = {r["uid"] for r in _shard_rows(dataset_dir)}
    assert sorted(got["a"] + got["b"]) == sorted(all_uids)  # 48 rows split 24 + 24: nothing dropped
    for name in ("a", "b"):  # each consumer receives the stream in order: positions are meaningful
        assert keys[name] == sorted(keys[name])


def _shard_rows(dataset_dir):
    from shards import list_shards, read_table

    return [r for p in list_shards(dataset_dir) for r in read_table(p, ["uid"]).to_pylist()]


def test_the_scheduling_loop_is_paced_and_a_paced_stream_still_yields_every_row(ray_local, dataset_dir):
    """A backpressured Ray Data loop spun a core away from the trainer (training.data.loop_throttle)."""
    import time
    from types import SimpleNamespace

    from ray.data import DataContext

    from training.data.loop_throttle import PERIOD_KEY, SchedulingLoopThrottle

    paced = build_train_dataset(dataset_dir, TrainTask(kind="base", image_size=16, text_ctx=16, data_loop_period=0.05))
    assert SchedulingLoopThrottle in paced.context.execution_callback_classes  # travels with the dataset
    assert paced.context.get_config(PERIOD_KEY) == 0.05
    assert sorted(r["uid"] for r in paced.take_all()) == sorted(r["uid"] for r in _shard_rows(dataset_dir))
    unpaced = build_train_dataset(dataset_dir, TrainTask(kind="base", image_size=16, text_ctx=16))
    assert SchedulingLoopThrottle not in unpaced.context.execution_callback_classes

    def step_time(period: float, steps: int = 6) -> float:
        ctx = DataContext()
        ctx.set_config(PERIOD_KEY, period)
        throttle, executor = SchedulingLoopThrottle(), SimpleNamespace(_data_context=ctx)
        throttle.before_execution_starts(executor)
        start = time.perf_counter()
        for _ in range(steps):
            throttle.on_execution_step(executor)
        return time.perf_counter() - start

    assert step_time(0.05) >= 6 * 0.05 - 0.05  # the first step may already have waited out its period
    assert step_time(0.0) < 0.05
    from shards import UserError

    with pytest.raises(UserError, match="data_loop_period"):
        TrainTask(kind="base", data_loop_period=-1)
