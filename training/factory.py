"""The one model factory: ModelConfig -> network (open_clip style: sizes are data, one constructor)."""
from __future__ import annotations

import torch

from training.model_config import ModelConfig
from training.model_kind import ModelKind


def create_model(cfg: ModelConfig, device: str | torch.device | None = None) -> torch.nn.Module:
    """Build the network `cfg` describes, in float32, on `device`.

    device="meta" builds shapes only (no memory; for parameter counts and FLOPs); None picks CUDA if
    present, else CPU. The config is attached as `model.config`. kind "clip" is built by
    training.nn.noised_clip.create_noised_clip(cfg).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if cfg.kind == ModelKind.CLIP:
        from training.nn.noised_clip import create_noised_clip
        with device:
            model = create_noised_clip(cfg)
    else:
        from training.nn.text2im import VARIANTS
        with device:
            model = VARIANTS[cfg.kind](
                text_ctx=cfg.text_ctx, xf_width=cfg.xf_width, xf_layers=cfg.xf_layers, xf_heads=cfg.xf_heads,
                xf_final_ln=cfg.xf_final_ln, n_vocab=cfg.n_vocab, xf_padding=cfg.xf_padding,
                image_size=cfg.image_size, in_channels=3, model_channels=cfg.num_channels,
                out_channels=6 if cfg.learn_sigma else 3, num_res_blocks=cfg.num_res_blocks,
                attention_resolutions=cfg.attention_downsample_rates(), dropout=cfg.dropout,
                channel_mult=cfg.channel_mult_tuple(), num_heads=cfg.num_heads,
                num_head_channels=cfg.num_head_channels, num_heads_upsample=cfg.num_heads_upsample,
                use_scale_shift_norm=cfg.use_scale_shift_norm, resblock_updown=cfg.resblock_updown,
                use_checkpoint=cfg.use_checkpoint,
            )
    model.config = cfg
    return model
