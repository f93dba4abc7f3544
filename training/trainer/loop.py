"""The per-worker training loop (what every Ray Train worker runs) and `Trainer`, one rank's state.

    for each optimizer step:                          (grad_accum micro-batches per step)
        t ~ U{0..T-1}, noise ~ N(0, I)  from a generator seeded by (seed, step, micro, rank)
        loss = diffusion.training_losses(engine, x0, t, caption, low-res, inpaint inputs)  | CLIP
        engine.backward(loss); engine.step()           (DeepSpeed: ZeRO, precision, clipping, AdamW)
        ema.update()
        every log_every: loss, loss by timestep quartile, grad norm, lr, loss scale, images/s, MFU
        every save_every: export (rank 0) + DeepSpeed checkpoint reported to Ray Train

Seeding randomness by step (not by a running generator) is what makes a resumed run draw the
same timesteps and noise as an uninterrupted one.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from training.trainer.config import TrainConfig

log = logging.getLogger(__name__)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    from training.data.position import derived_seed

    return derived_seed(seed, "train-step", step, micro, rank) % (2**63)


class Trainer:
    """One rank's model, DeepSpeed engine, EMA, diffusion and step counter."""

    def __init__(self, cfg: TrainConfig, model_cfg, *, device: torch.device, init: str | None = None,
                 verify_init: bool = True, rank: int = 0, world_size: int = 1):
        """init: checkpoint to start from; verify_init=False where the driver verified it already."""
        from training.diffusion import create_diffusion
        from training.factory import create_model
        from training.trainer.ema import ParameterEMA
        from training.trainer.engine import build_engine, promote_scalar_parameters
        from training.trainer.model_setup import load_initial_weights
        from training.trainer.objectives import step_loss_fn

        self.cfg, self.model_cfg, self.device = cfg, model_cfg, device
        self.rank, self.world_size = rank, world_size
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        model = create_model(model_cfg, device=device)
        if init:
            load_initial_weights(model, init, model_cfg, verify=verify_init)
        model.train()
        self.scalar_params = promote_scalar_parameters(model)
        self.diffusion = create_diffusion(model_cfg, timestep_respacing="")
        self.engine, self.scheduler = build_engine(model, cfg)
        self.ema = ParameterEMA(self.engine.module, cfg.ema_rate)
        clip_loss = model.clip_config.contrastive_loss if cfg.kind == "clip" else "softmax"
        self.loss_fn = step_loss_fn(cfg.kind, cfg.p2_gamma, cfg.p2_k, cfg.clip_mode, clip_loss)  # cfg resolved per kind (launcher)
        self.step = 0
        self.images_seen = 0

    # ---- one step -------------------------------------------------------------------------------
    def model_fn(self, *args, **kwargs):
        from training.trainer.objectives import forward_context

        with forward_context(self.device.type, self.cfg.precision):
            out = self.engine(*args, **kwargs)
        return out.float()

    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns this rank's raw statistics."""
        assert len(micro_batches) == self.cfg.grad_accum
        stats = {"loss_sum": 0.0, "count": 0, "quartiles": {}}
        grad_norm = None
        for micro, batch in enumerate(micro_batches):
            gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, self.step, micro, self.rank))
            out = self.loss_fn(self.model_fn, self.diffusion, batch, gen, self.device)
            self.engine.backward(out["loss"])
            if micro == len(micro_batches) - 1 and self.engine.zero_optimization_stage() == 0:
                grad_norm = local_grad_norm(self.engine.module)  # grads are all-reduced by now
            self.engine.step()
            from training.trainer.objectives import loss_quartiles

            stats["loss_sum"] += float(out["losses"].float().sum())
            stats["count"] += int(out["losses"].numel())
            for key, (s, n) in loss_quartiles(out["t"], out["losses"], self.diffusion.num_timesteps).items():
                prev = stats["quartiles"].get(key, (0.0, 0))
                stats["quartiles"][key] = (prev[0] + s, prev[1] + n)
        self.step += 1
        self.ema.update(self.step if self.cfg.ema_warmup else None)
        self.images_seen += self.cfg.batch_size * self.cfg.grad_accum * self.world_size
        reported = self.engine.get_global_grad_norm()
        stats["grad_norm"] = float(reported) if reported is not None else grad_norm
        return stats

    def export_state(self) -> tuple[dict, dict]:
        """(raw float32 weights, EMA weights), whole tensors keyed and shaped like the model's state
        dict. Collective under ZeRO (every rank calls it)."""
        from training.trainer.checkpointing import full_fp32_weights
        from training.trainer.engine import restore_scalar_shapes

        raw = restore_scalar_shapes(full_fp32_weights(self.engine), self.scalar_params)
        ema = restore_scalar_shapes(self.ema.full_state_dict(), self.scalar_params)
        return raw, ema

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])


def local_grad_norm(module) -> float:
    """L2 norm of the gradients a rank holds (the global norm when they are whole and all-reduced)."""
    total = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        if p.grad is not None:
            total += p.grad.detach().double().pow(2).sum().cpu()
    return float(total.sqrt())


class WindowStats:
    """Statistics between two log lines, reduced over ranks when logged (a collective)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.count, self.steps = 0.0, 0, 0
        self.quart = [[0.0, 0] for _ in range(4)]
        self.grad_norms: list[float] = []
        self.t0 = time.perf_counter()

    def add(self, stats: dict) -> None:
        self.loss_sum += stats["loss_sum"]
        self.count += stats["count"]
        self.steps += 1
        for q in range(4):
            s, n = stats["quartiles"].get(f"loss_q{q}", (0.0, 0))
            self.quart[q][0] += s
            self.quart[q][1] += n
        if stats.get("grad_norm") is not None:
            self.grad_norms.append(stats["grad_norm"])

    def reduce(self) -> dict:
        import torch.distributed as dist

        values = torch.tensor([self.loss_sum, self.count] + [v for q in self.quart for v in q], dtype=torch.float64)
        if dist.is_initialized() and dist.get_world_size() > 1:
            values = values.to(_collective_device())
            dist.all_reduce(values)
            values = values.cpu()
        v = values.tolist()
        out = {"loss": v[0] / max(v[1], 1)}
        for q in range(4):
            s, n = v[2 + 2 * q], v[3 + 2 * q]
            out[f"loss_q{q}"] = s / n if n else float("nan")
        if self.grad_norms:
            out["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        return out


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# the Ray Train worker
# ---------------------------------------------------------------------------------------------
def train_worker(config: dict) -> None:
    """Ray Train's train_loop_per_worker. config: {"train": TrainConfig dict, "model": ModelConfig
    dict, "run_dir", "resume_dir" (driver's newest checkpoint or None), "verified" (files in it the
    driver hashed), "init" (verified by the driver), "tokenizer_dir", "flops_per_image", "queue"
    (progress to the driver, or None)}."""
    from training.trainer.engine import select_accelerator

    device_type = select_accelerator()  # before DeepSpeed is imported
    import ray.train

    from training.data import iter_train_batches
    from training.data.position import DataPosition
    from training.model_config import ModelConfig
    from training.trainer.engine import init_distributed, loss_scale
    from training.trainer.metrics import MetricsWriter, device_peak_tflops
    from training.trainer.model_setup import train_task, training_tokenizer

    cfg = TrainConfig.model_validate(config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if device_type == "cuda":
        device = torch.device("cuda", ctx.get_local_rank())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    init_distributed()
    model_cfg = ModelConfig.from_dict(config["model"], source="model config")
    run_dir = Path(config["run_dir"])

    trainer = Trainer(cfg, model_cfg, device=device, init=config.get("init"), verify_init=False, rank=rank,
                      world_size=world)
    state, checked = _resume(trainer, config.get("resume_dir"), ray.train.get_checkpoint(), rank, world, run_dir,
                             frozenset(config.get("verified") or ()))
    start = DataPosition.from_dict(state.get("position")) if state else None

    writer = MetricsWriter(run_dir, config.get("queue")) if rank == 0 else None
    if writer and state:
        writer.send({"event": f"resumed from step {trainer.step} (data position {state.get('position')}); "
                              f"{verification_summary(checked)}"})
    peak = device_peak_tflops(device_type, cfg.precision, cfg.peak_tflops)
    flops_per_image = config.get("flops_per_image") or 0
    tokenizer = training_tokenizer(model_cfg, config.get("tokenizer_dir"))
    task = train_task(cfg, model_cfg)
    batches = iter_train_batches(ray.train.get_dataset_shard("train"), cfg.batch_size, task, tokenizer, start)

    window = WindowStats()
    position = start or DataPosition()
    pending: list[dict] = []
    try:
        if trainer.step >= cfg.max_steps:  # already done: its final export was written with the checkpoint
            return
        for batch, position in batches:
            pending.append(batch)
            if len(pending) < cfg.grad_accum:
                continue
            lr_used = trainer.lr()  # the rate this step applies (the schedule advances in engine.step)
            window.add(trainer.train_step(pending))
            pending = []
            step = trainer.step
            metrics = {}
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                metrics = window.reduce()
                elapsed = time.perf_counter() - window.t0
                images = window.steps * cfg.batch_size * cfg.grad_accum * world
                metrics.update(lr=lr_used, loss_scale=loss_scale(trainer.engine),
                               images_per_s=images / max(elapsed, 1e-9), images_seen=trainer.images_seen,
                               corrupt_rows=batches.corrupt_rows)
                if peak and flops_per_image:
                    # forward + backward ~ 3x the forward FLOPs
                    metrics["mfu"] = 3 * flops_per_image * metrics["images_per_s"] / (peak * 1e12 * world)
                if writer:
                    writer.write(step, metrics)
                window.reset()
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                _save(trainer, run_dir, position, cfg, rank, world, config, batches, metrics)
            if step >= cfg.max_steps:
                break
        else:
            if trainer.step < cfg.max_steps:
                log.warning("data stream ended at step %d before max_steps %d", trainer.step, cfg.max_steps)
                _save(trainer, run_dir, position, cfg, rank, world, config, batches, {})
    finally:
        if writer:
            writer.close()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _resume(trainer: Trainer, resume_dir: str | None, ray_checkpoint, rank: int, world: int,
            run_dir: Path, verified: frozenset) -> tuple[dict, list[dict]]:
    """Load the newest of: the driver's checkpoint, Ray Train's latest (after a worker restart) and
    the newest complete one in RUN/checkpoints (reported, but a worker died before Ray took note).

    Candidates are compared by their manifests' step (no hashing); only the one loaded is verified,
    each rank hashing its own files (checkpointing.load_training_checkpoint). Returns (this rank's
    state, every rank's verification figures), ({}, []) for a fresh start."""
    from training.trainer.checkpointing import latest_checkpoint_dir, load_training_checkpoint, read_checkpoint_listing

    newest = latest_checkpoint_dir(run_dir)
    # On equal steps the driver's checkpoint wins: its state-rank0.json is verified already.
    paths = [p for p in dict.fromkeys([resume_dir, str(newest) if newest else None]) if p]
    candidates = [(read_checkpoint_listing(p).step, -i, p, None) for i, p in enumerate(paths)]
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as d:
            if any(Path(d).glob("manifest-rank*.json")):
                candidates.append((read_checkpoint_listing(d).step, -len(paths), None, ray_checkpoint))
    if not candidates:
        return {}, []
    _, _, path, ckpt = max(candidates, key=lambda c: c[:2])
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state, checked = load_training_checkpoint(Path(d), trainer.engine, trainer.ema, rank, world, verified)
    else:
        state, checked = load_training_checkpoint(Path(path), trainer.engine, trainer.ema, rank, world, verified)
    trainer.step = int(state["step"])
    trainer.images_seen = int(state.get("images_seen", 0))
    return state, checked


def verification_summary(checked: list[dict]) -> str:
    """One clause for the console: what each rank hashed before loading."""
    ranks = ", ".join(f"rank {r} {c['files']} files {c['bytes'] / 1e6:.1f} MB" for r, c in enumerate(checked))
    seconds = max((c["seconds"] for c in checked), default=0.0)
    return f"verified {ranks} in {seconds:.1f}s"


def _save(trainer: Trainer, run_dir: Path, position, cfg: TrainConfig, rank: int, world: int, config: dict,
          batches, metrics: dict) -> None:
    """Export (rank 0 writes) and checkpoint (every rank), then report to Ray Train. Collective."""
    import ray.train

    from training.data import agree_position
    from training.trainer.checkpointing import (CHECKPOINTS_DIR, export_weights, mark_complete,
                                                save_training_checkpoint, step_dir_name)

    step = trainer.step
    position = agree_position(position)
    raw, ema = trainer.export_state()
    if rank == 0:
        extra = {"train": cfg.model_dump(mode="json"), "images_seen": trainer.images_seen,
                 "data_position": position.to_dict()}
        export_weights(run_dir, step, raw, ema, trainer.model_cfg, extra, config.get("tokenizer_dir"))
    del raw, ema
    state = {"step": step, "position": position.to_dict(), "images_seen": trainer.images_seen,
             "corrupt_rows": getattr(batches, "corrupt_rows", 0)}
    # A fresh private folder, handed whole to Ray Train, which copies it into RUN/checkpoints/step-N
    # (the step counts only once complete.json is there): no per-file atomic writes needed inside.
    tmp = Path(tempfile.mkdtemp(prefix=f"glide-ckpt-r{rank}-"))
    save_training_checkpoint(tmp, trainer.engine, trainer.ema, state, rank, world)
    report = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                     checkpoint_dir_name=step_dir_name(step), delete_local_checkpoint_after_upload=True)
    _barrier()  # every rank's files are in RUN/checkpoints/step-N now
    if rank == 0:
        mark_complete(run_dir / CHECKPOINTS_DIR / step_dir_name(step), step)
    if rank == 0 and config.get("queue") is not None:
        try:
            config["queue"].put_nowait({"event": f"saved step {step}: {run_dir}/exports/{step_dir_name(step)}"})
        except Exception:
            pass
