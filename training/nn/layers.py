"""Small layers shared by the UNet and the text transformer (glide-text2im's nn.py semantics)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype, with an optional fused swish.

    swish=1.0 applies SiLU after the norm; 0.0 applies nothing (glide's GroupNorm32).
    """

    def __init__(self, num_channels: int, swish: float = 0.0, num_groups: int = 32, eps: float = 1e-5):
        super().__init__(num_groups=num_groups, num_channels=num_channels, eps=eps)
        self.swish = swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        y = y.to(x.dtype)
        if self.swish == 1.0:
            y = F.silu(y)
        elif self.swish:
            y = y * torch.sigmoid(y * float(self.swish))
        return y


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 with float32 gains, returning the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place (output convs start as the identity residual)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embeddings [N] -> [N, dim]: cos then sin, frequencies exp(-ln(P) * i / half).

    Timesteps may be fractional. Computed in float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs.to(device=timesteps.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def convert_modules(module: nn.Module, dtype: torch.dtype, types: tuple[type, ...]) -> None:
    """Cast weights and biases of every submodule of the given types to `dtype` (norms untouched)."""
    for m in module.modules():
        if isinstance(m, types):
            m.weight.data = m.weight.data.to(dtype)
            if getattr(m, "bias", None) is not None:
                m.bias.data = m.bias.data.to(dtype)
