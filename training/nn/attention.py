"""Spatial self-attention with text keys/values (glide-text2im's AttentionBlock), through SDPA.

Channel layouts are glide's, so released weights load by key and compute the same thing:
  qkv        Conv1d(C -> 3C): per head h, channels [q_h | k_h | v_h] (head-major), width C/heads each
  encoder_kv Conv1d(xf_width -> 2C): per head [k_h | v_h]; the text keys/values come FIRST in the
             key sequence, then the image's
  scale      1/sqrt(head channels) (glide splits it as 1/sqrt(sqrt(ch)) on q and k: same maths)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.nn.layers import GroupNorm32, zero_module


def qkv_attention(qkv: torch.Tensor, n_heads: int, encoder_kv: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 3*H*C, T] (+ [B, 2*H*C, S]) -> [B, H*C, T]."""
    b, width, t = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(b, n_heads, 3 * ch, t).split(ch, dim=2)  # each [B, H, C, T]
    if encoder_kv is not None:
        ek, ev = encoder_kv.reshape(b, n_heads, 2 * ch, -1).split(ch, dim=2)  # each [B, H, C, S]
        k = torch.cat([ek, k], dim=-1)
        v = torch.cat([ev, v], dim=-1)
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2).reshape(b, n_heads * ch, t)


class AttentionBlock(nn.Module):
    """x + proj_out(attention(norm(x), text)) over all spatial positions; [B, C, H, W] -> same."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 encoder_channels: int | None = None):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0, (channels, num_head_channels)
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels, swish=0.0)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, channels * 2, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C, *spatial]; encoder_out: [B, xf_width, L] (the text transformer's xf_out)."""
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        ekv = self.encoder_kv(encoder_out) if encoder_out is not None else None
        h = self.proj_out(qkv_attention(qkv, self.num_heads, ekv))
        return x + h.reshape(b, c, *spatial)
