"""The DeepSpeed engine: ZeRO stage, precision, AdamW with warm-up and a schedule, clipping.

AdamW is torch's (DeepSpeed's "client optimizer"), so the same optimizer runs on CPU and GPU
without building DeepSpeed's fused kernels. The schedule is a LambdaLR stepped by the engine.
"""
from __future__ import annotations

import math
import os

from shards import UserError
from training.trainer.config import TrainConfig


def select_accelerator() -> str:
    """'cuda' if a GPU is visible, else 'cpu'; tells DeepSpeed before it is first imported."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return "cpu"


def check_precision(cfg: TrainConfig, device_type: str) -> None:
    """DeepSpeed's fp16 (loss-scaled) path needs a GPU: say so in one line instead of failing deep inside."""
    if cfg.precision == "fp16" and device_type != "cuda":
        raise UserError("--precision fp16: DeepSpeed's fp16 training needs GPUs (this run is on CPU); "
                        "use --precision bf16 or fp32")


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Learning rate / peak at optimizer step `step` (0-based): linear warm-up, then the schedule."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    if cfg.lr_schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def deepspeed_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON config for `cfg` (batch sizes per worker; DeepSpeed derives the global one)."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        # Small test models have tiny parameters: partition them all, never keep them resident.
        zero.update(stage3_param_persistence_threshold=0, stage3_max_live_parameters=int(1e9),
                    stage3_prefetch_bucket_size=int(5e7))
    ds = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch AdamW as the client optimizer
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "steps_per_print": 10**12,  # our own metrics, not DeepSpeed's prints
        "wall_clock_breakdown": False,
    }
    return ds


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices and convolution kernels, not biases, norms or embeddings' 1-D params."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_engine(model, cfg: TrainConfig):
    """Wrap `model` (float32, on its device) in a DeepSpeed engine; returns (engine, lr_scheduler).

    Collective: every rank calls it with the same model structure. torch.distributed must already
    be initialised (Ray Train does it; `init_distributed` below does it for one process).
    """
    import deepspeed
    import torch

    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                  eps=cfg.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg))
    engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=deepspeed_config(cfg))
    return engine, scheduler


def enable_activation_checkpointing(model) -> None:
    """Recompute every UNet block and text-transformer layer in the backward pass (torch's
    checkpoint, in the model's own forward: DeepSpeed's activation_checkpointing config only
    affects its own checkpointing API, which these models do not call)."""
    owners = [m for m in model.modules() if hasattr(m, "use_checkpoint")]
    if not owners:
        raise UserError(f"train.activation_checkpointing: a {type(model).__name__} has no checkpointed blocks")
    for module in owners:
        module.use_checkpoint = True


def init_distributed() -> None:
    """Initialise DeepSpeed's communication on top of torch.distributed (gloo on CPU, nccl on GPU).

    Inside Ray Train the process group exists already and is reused; a lone process (benchmarks,
    tests) gets a one-rank group from the MASTER_ADDR/PORT environment defaults set here.
    """
    import deepspeed
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loss_scale(engine) -> float:
    """The current dynamic loss scale (1.0 unless fp16)."""
    opt = getattr(engine, "optimizer", None)
    for attr in ("cur_scale", "loss_scale"):
        value = getattr(opt, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    scaler = getattr(opt, "loss_scaler", None)
    value = getattr(scaler, "cur_scale", None) or getattr(scaler, "loss_scale", None)
    return float(value) if isinstance(value, (int, float)) else 1.0


def promote_scalar_parameters(module) -> list[str]:
    """Give 0-dim parameters (e.g. the noised CLIP's logit scale) shape [1]; returns their names.

    DeepSpeed broadcasts parameters as byte views, which 0-dim tensors cannot take. Broadcasting
    keeps the forward pass unchanged; exports put the original shape back (`restore_scalar_shapes`).
    """
    import torch

    names = []
    for name, p in list(module.named_parameters()):
        if p.ndim == 0:
            owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            leaf = name.rpartition(".")[2]
            setattr(owner, leaf, torch.nn.Parameter(p.detach().reshape(1).clone(), requires_grad=p.requires_grad))
            names.append(name)
    return names


def restore_scalar_shapes(state: dict, names: list[str]) -> dict:
    for name in names:
        if name in state:
            state[name] = state[name].reshape(())
    return state
