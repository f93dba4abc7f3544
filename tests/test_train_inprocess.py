"""The trainer on real components without the CLI: DeepSpeed engines fed by the Ray Data pipeline.

- every model kind's loss falls on the sample world (one process, a one-rank DeepSpeed group);
- inpainting from a base checkpoint starts exactly where the base is (zero-initialised channels);
- ZeRO-2 and ZeRO-3 follow stage 0's loss curve and EMA, in a 2-worker Ray Train run.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STEPS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from train_world import micro_config, write_world_shards

    root = tmp_path_factory.mktemp("train-world")
    dataset = write_world_shards(root, count=32, rows_per_shard=16, image_size=32)
    return {"dataset": str(dataset), "base": str(micro_config(root / "micro-base.json")),
            "upsampler": str(micro_config(root / "micro-upsampler.json", "upsampler")), "root": root}


@pytest.fixture(scope="module")
def local_ray():
    import logging

    import ray

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def first_batches(dataset: str, cfg, model_cfg, n: int) -> list[dict]:
    from training.data import build_train_dataset, iter_train_batches
    from training.trainer.model_setup import train_task, training_tokenizer

    task = train_task(cfg, model_cfg)
    ds = build_train_dataset(dataset, task, num_epochs=2)
    it = iter_train_batches(ds, cfg.batch_size, task, training_tokenizer(model_cfg))
    return [batch for batch, _ in itertools.islice(it, n)]


def fixed_loss(trainer, batch: dict, seed: int) -> float:
    """Mean loss on `batch` at timesteps and noise fixed by `seed`, no update: comparable across steps."""
    import torch

    trainer.engine.module.eval()
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            return float(trainer.loss_fn(trainer.model_fn, trainer.diffusion, batch, gen, trainer.device)["loss"])
    finally:
        trainer.engine.module.train()


def train_and_measure(trainer, batches: list[dict], steps: int = STEPS) -> tuple[float, float]:
    """Loss on batches[0] at fixed timesteps and noise, before and after `steps` steps over `batches`."""
    before = fixed_loss(trainer, batches[0], seed=123)
    for batch in itertools.islice(itertools.cycle(batches), steps):
        trainer.train_step([batch])
    return before, fixed_loss(trainer, batches[0], seed=123)


@pytest.fixture(scope="module")
def one_rank(local_ray):
    from training.trainer.engine import init_distributed

    init_distributed()


def make_trainer(kind: str, model: str = "", init: str | None = None, **settings):
    import torch

    from training.trainer.config import TrainConfig
    from training.trainer.loop import Trainer
    from training.trainer.model_setup import resolve_model_config

    values = dict(kind=kind, model=model, init=init, batch_size=8, lr=2e-3, ema_rate=0.9, shuffle_buffer=0,
                  cfg_dropout=0.2, seed=1)
    values.update(settings)
    cfg = TrainConfig(**values)
    model_cfg = resolve_model_config(cfg)
    return cfg, model_cfg, Trainer(cfg, model_cfg, device=torch.device("cpu"), init=init)


def test_every_kind_learns_and_inpainting_starts_from_the_base(world, one_rank, tmp_path):
    from training.trainer.checkpointing import export_weights

    results = {}
    # the diffusion kinds share one stream with every conditioning input (low-res and masks too)
    cfg, model_cfg, base = make_trainer("base", model=world["base"])
    up_cfg, up_model_cfg, up = make_trainer("upsampler", model=world["upsampler"])
    full = first_batches(world["dataset"], cfg.model_copy(update={"kind": "upsampler-inpaint"}),
                         up_model_cfg, 3)
    assert full[0]["x0"].shape == (8, 3, 16, 16) and full[0]["low_res"].shape == (8, 3, 8, 8)
    assert full[0]["inpaint_mask"].shape == (8, 1, 16, 16)
    only = lambda keys: [{k: b[k] for k in keys} for b in full]  # noqa: E731
    text = ("x0", "tokens", "mask")
    results["base"] = train_and_measure(base, only(text))
    results["upsampler"] = train_and_measure(up, only(text + ("low_res",)))

    # inpainting fine-tunes from the trained base's export: the converted model computes what the base did
    base_ckpt = export_weights(tmp_path / "base-run", base.step, *base.export_state(), model_cfg, {})
    _, inp_model_cfg, inpaint = make_trainer("inpaint", init=str(base_ckpt), ema_rate=0.0)
    assert inp_model_cfg.kind == "base-inpaint" and inp_model_cfg.inpaint
    w = dict(inpaint.engine.module.named_parameters())["input_blocks.0.0.weight"]
    assert w.shape[1] == 7 and float(w.detach()[:, 3:].abs().max()) == 0.0
    inpaint_batches = only(text + ("inpaint_image", "inpaint_mask"))
    _, _, base_from_ema = make_trainer("base", init=str(base_ckpt))  # model config from the checkpoint
    assert fixed_loss(inpaint, inpaint_batches[0], seed=5) == pytest.approx(
        fixed_loss(base_from_ema, only(text)[0], seed=5), rel=1e-5)
    results["inpaint"] = train_and_measure(inpaint, inpaint_batches)

    up_inp_cfg, _, up_inpaint = make_trainer("upsampler-inpaint", model=world["upsampler"])
    results["upsampler-inpaint"] = train_and_measure(up_inpaint, full)

    clip_cfg, clip_model_cfg, clip = make_trainer("clip", lr=3e-3)
    clip_batches = first_batches(world["dataset"], clip_cfg, clip_model_cfg, 3)
    assert bool(clip_batches[0]["mask"][:, 0].all())  # CLIP framing: every caption starts with SOT
    # contrastive learning is slower: more steps, and it must beat chance (uniform logits: ln B), which
    # merely flattening a random init's logits would not
    results["clip"] = train_and_measure(clip, clip_batches, steps=4 * STEPS)
    assert results["clip"][1] < math.log(clip_cfg.batch_size) - 0.1, f"clip: {results['clip']} not below chance"

    for kind, (before, after) in results.items():
        assert after < 0.85 * before, f"{kind}: loss {before:.4f} -> {after:.4f} did not fall"


# ---------------------------------------------------------------------------------------------
# ZeRO stages agree: one Ray Train run, 2 workers, the same batches through stage 0, 2 and 3
# ---------------------------------------------------------------------------------------------
def zero_stage_curves(config: dict) -> None:
    """Ray Train worker: train a fresh model under each ZeRO stage on the same 3 batches x 2."""
    from training.trainer.engine import select_accelerator

    select_accelerator()
    import ray.train
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from training.data import iter_train_batches
    from training.model_config import ModelConfig
    from training.trainer.config import TrainConfig
    from training.trainer.engine import init_distributed
    from training.trainer.loop import Trainer
    from training.trainer.model_setup import train_task, training_tokenizer

    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    model_cfg = ModelConfig.from_dict(config["model"])
    base_cfg = TrainConfig.model_validate(config["train"])
    task = train_task(base_cfg, model_cfg)
    it = iter_train_batches(ray.train.get_dataset_shard("train"), base_cfg.batch_size, task,
                            training_tokenizer(model_cfg))
    batches = [b for b, _ in itertools.islice(it, 3)]
    curves = {}
    for stage in (0, 2, 3):
        cfg = base_cfg.model_copy(update={"zero_stage": stage})
        trainer = Trainer(cfg, model_cfg, device=torch.device("cpu"), rank=rank, world_size=world)
        if stage == 0:
            init, _ = trainer.export_state()
            if rank == 0:
                save_file(init, os.path.join(config["out"], "init.safetensors"))
        losses = []
        for batch in batches * 2:
            stats = trainer.train_step([batch])
            total = torch.tensor([stats["loss_sum"], stats["count"]], dtype=torch.float64)
            dist.all_reduce(total)
            losses.append(float(total[0] / total[1]))
        raw, ema = trainer.export_state()
        curves[stage] = losses
        if rank == 0:
            save_file({**{f"ema.{k}": v for k, v in ema.items()}, **{f"raw.{k}": v for k, v in raw.items()}},
                      os.path.join(config["out"], f"stage{stage}.safetensors"))
        del trainer
    if rank == 0:
        with open(os.path.join(config["out"], "curves.json"), "w") as f:
            json.dump(curves, f)


def test_zero_2_and_3_follow_stage_0(world, local_ray, tmp_path):
    import ray.cloudpickle
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from safetensors.torch import load_file

    from training.data import build_train_dataset, train_data_config
    from training.trainer.config import TrainConfig
    from training.trainer.model_setup import resolve_model_config, train_task

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = TrainConfig(kind="base", model=world["base"], batch_size=4, lr=2e-3, ema_rate=0.5, shuffle_buffer=0,
                      seed=3)
    model_cfg = resolve_model_config(cfg)
    dataset = build_train_dataset(world["dataset"], train_task(cfg, model_cfg), num_epochs=2)
    trainer = TorchTrainer(
        zero_stage_curves,
        train_loop_config={"train": cfg.model_dump(mode="json"), "model": model_cfg.to_dict(),
                           "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="zero"),
        torch_config=TorchConfig(backend="gloo"),
        datasets={"train": dataset}, dataset_config=train_data_config())
    trainer.fit()
    curves = {int(k): v for k, v in json.loads((tmp_path / "curves.json").read_text()).items()}
    assert curves[0][-1] < curves[0][0]  # it trains
    for stage in (2, 3):
        assert curves[stage] == pytest.approx(curves[0], rel=1e-4), f"ZeRO-{stage} loss curve differs"
    # Weights agree up to reduction-order rounding, which Adam amplifies where gradients are ~0:
    # compare each stage's total update with stage 0's.
    init = load_file(str(tmp_path / "init.safetensors"))
    ref = load_file(str(tmp_path / "stage0.safetensors"))

    def update(state, prefix):
        return torch.cat([(state[prefix + k] - init[k]).flatten() for k in init])

    for prefix in ("raw.", "ema."):
        ref_update = update(ref, prefix)
        assert float(ref_update.norm()) > 0
        for stage in (2, 3):
            other = update(load_file(str(tmp_path / f"stage{stage}.safetensors")), prefix)
            rel = float((other - ref_update).norm() / ref_update.norm())
            assert rel < 1e-2, f"ZeRO-{stage} {prefix[:-1]} weights moved differently from stage 0 ({rel:.2e})"
    assert not torch.equal(update(ref, "raw."), update(ref, "ema."))  # the EMA lags the weights
