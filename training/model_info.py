"""Parameter counts and forward FLOPs of a model config, measured on the meta device.

Nothing is allocated: the network is built on torch's meta device (shapes only) and one batch-1
forward pass, text transformer included, runs under FlopCounterMode (FLOPs = 2 x multiply-adds of
matmuls, convolutions and attention). Works for the 3.5B paper model in about a second.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.model_config import ModelConfig


@dataclass
class ModelInfo:
    total: int
    visual: int
    text: int
    flops_per_image: int
    flops_by_op: dict[str, int]

    def to_json_dict(self) -> dict:
        return {"params": {"total": self.total, "visual": self.visual, "text": self.text},
                "flops_per_image": self.flops_per_image}


def text_param_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes counted as "text" (a model may declare its own)."""
    prefixes = getattr(model, "text_param_prefixes", None)
    if prefixes is not None:
        return tuple(prefixes)
    if hasattr(model, "text_encoder"):  # the noised CLIP: its text tower
        return ("text_encoder.",)
    from training.nn.text2im import TEXT_PARAM_PREFIXES
    return TEXT_PARAM_PREFIXES


def count_params(model: torch.nn.Module) -> tuple[int, int, int]:
    """(total, visual, text) parameter counts; shared tensors are counted once."""
    prefixes = text_param_prefixes(model)
    total = text = 0
    for name, p in model.named_parameters():  # named_parameters() already drops duplicates
        total += p.numel()
        if name.startswith(prefixes):
            text += p.numel()
    return total, total - text, text


def example_inputs(model: torch.nn.Module, cfg: ModelConfig) -> tuple[tuple, dict]:
    """Batch-1 inputs for `model` on the current default device (args, kwargs)."""
    if hasattr(model, "example_inputs"):  # e.g. the noised CLIP model
        return model.example_inputs(1)
    size = cfg.image_size
    x = torch.zeros(1, 3, size, size)
    tokens = torch.zeros(1, cfg.text_ctx, dtype=torch.long)
    mask = torch.ones(1, cfg.text_ctx, dtype=torch.bool)
    kwargs = {}
    if cfg.super_res:
        low = int(cfg.extra.get("low_res_size", size // 4))
        kwargs["low_res"] = torch.zeros(1, 3, low, low)
    if cfg.inpaint:
        kwargs["inpaint_image"] = torch.zeros(1, 3, size, size)
        kwargs["inpaint_mask"] = torch.zeros(1, 1, size, size)
    return (x, torch.zeros(1), tokens, mask), kwargs


def model_info(cfg: ModelConfig) -> ModelInfo:
    """Params (total / visual / text) and forward FLOPs per image for `cfg`, without allocating."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.factory import create_model

    model = create_model(cfg, device="meta").eval()
    total, visual, text = count_params(model)
    with torch.device("meta"), torch.no_grad():
        args, kwargs = example_inputs(model, cfg)
        with FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return ModelInfo(total, visual, text, int(counter.get_total_flops()), by_op)
