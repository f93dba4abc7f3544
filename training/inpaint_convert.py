"""Turn a trained base (or upsampler) into an inpainting model, as GLIDE's fine-tuning starts.

The inpainting variants see 4 more input channels (masked image, mask). Every weight is copied;
the first conv's new input channels start at zero, so at conversion the inpainting model computes
exactly what the source model did, whatever masked image and mask it is given.

First-conv input channel layout (input_blocks.0.0.weight, [C, in, 3, 3]):
    base       [x(3)]                     -> base-inpaint       [x(3), masked(3), mask(1)]
    upsampler  [x(3), low_res(3)]         -> upsampler-inpaint  [x(3), masked(3), mask(1), low_res(3)]
"""
from __future__ import annotations

from typing import Mapping

import torch

from shards import UserError
from training.model_config import ModelConfig
from training.model_kind import ModelKind

FIRST_CONV = "input_blocks.0.0.weight"


def inpaint_config(cfg: ModelConfig) -> ModelConfig:
    """The inpainting counterpart of a base/upsampler config (all other fields kept)."""
    variant = ModelKind(cfg.kind).inpaint_variant
    if variant is None:
        raise UserError(f"model kind {cfg.kind!r}: only 'base' and 'upsampler' models convert to inpainting")
    return cfg.replace(kind=variant, inpaint=True)


def inpaint_state_dict(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Copy `state` (of a `cfg` model), widening the first conv with zero-initialised channels."""
    if FIRST_CONV not in state:
        raise UserError(f"state dict has no '{FIRST_CONV}': not a GLIDE UNet")
    w = state[FIRST_CONV]
    if w.shape[1] != cfg.in_channels:
        raise UserError(f"'{FIRST_CONV}' has {w.shape[1]} input channels, config kind {cfg.kind!r} "
                        f"expects {cfg.in_channels}")
    new = w.new_zeros(w.shape[0], cfg.in_channels + 4, *w.shape[2:])
    new[:, :3] = w[:, :3]  # x_t
    if cfg.kind == ModelKind.UPSAMPLER:
        new[:, 7:10] = w[:, 3:6]  # the upsampled low-res image moves after masked image and mask
    out = dict(state)
    out[FIRST_CONV] = new
    return out


def to_inpaint(model_or_state_dict, cfg: ModelConfig) -> tuple[torch.nn.Module, ModelConfig]:
    """(base/upsampler model or its state dict, its config) -> (inpainting model, inpainting config).

    The new model lives on the device of the source weights, in float32.
    """
    from training.factory import create_model

    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = dict(model_or_state_dict)
    new_cfg = inpaint_config(cfg)
    new_state = inpaint_state_dict(state, cfg)
    device = next(iter(state.values())).device if state else torch.device("cpu")
    model = create_model(new_cfg, device=device)
    model.load_state_dict(new_state, strict=True)
    return model, new_cfg
