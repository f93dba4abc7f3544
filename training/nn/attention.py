"""Spatial self-attention with text keys/values (glide-text2im's AttentionBlock), through SDPA.

Channel layouts are glide's, so released weights load by key and compute the same thing:
  qkv        Conv1d(C -> 3C): per head h, channels [q_h | k_h | v_h] (head-major), width C/heads each
  encoder_kv Conv1d(xf_width -> 2C): per head [k_h | v_h]; the text keys/values come FIRST in the
             key sequence, then the image's
  scale      1/sqrt(head channels) (glide splits it as 1/sqrt(sqrt(ch)) on q and k: same maths)

Speed: SDPA takes q, k, v as [B, H, T, C] with the channel dim contiguous, so PyTorch can pick its
fused (flash) kernels, on CPU too: with glide's [B, H, C, T] views it silently falls back to the
unfused maths path (materialised [T, T] scores, ~10x slower on CPU). The text keys/values depend on
the caption only, so a sampler can project them once per run (`project_encoder_kv`) and pass them
per layer instead of xf_out (see Text2ImUNet.add_encoder_kv).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.nn.layers import GroupNorm32, zero_module


def split_heads_kv(kv: torch.Tensor, n_heads: int) -> torch.Tensor:
    """glide's [B, 2*H*C, S] per-head [k_h | v_h] layout -> [B, H, S, 2C] (contiguous; k = [..., :C])."""
    b, width, s = kv.shape
    return kv.reshape(b, n_heads, width // n_heads, s).transpose(-1, -2).contiguous()


def qkv_attention(qkv: torch.Tensor, n_heads: int, encoder_kv: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 3*H*C, T] (+ text keys/values: [B, 2*H*C, S] as encoder_kv's output, or already split
    as [B, H, S, 2C] by split_heads_kv) -> [B, H*C, T]."""
    b, width, t = qkv.shape
    ch = width // (3 * n_heads)
    qkv = qkv.reshape(b, n_heads, 3 * ch, t).transpose(-1, -2).contiguous()  # [B, H, T, 3C]
    q, k, v = qkv.split(ch, dim=-1)  # each [B, H, T, C], channel stride 1
    if encoder_kv is not None:
        if encoder_kv.dim() == 3:
            encoder_kv = split_heads_kv(encoder_kv, n_heads)
        k = torch.cat([encoder_kv[..., :ch], k], dim=2)
        v = torch.cat([encoder_kv[..., ch:], v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, C]
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
        self.layer_index = -1  # position among the UNet's attention blocks (set by UNetModel)

    def project_encoder_kv(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """xf_out [B, xf_width, L] -> this layer's text keys/values [B, H, L, 2C] (split_heads_kv)."""
        return split_heads_kv(self.encoder_kv(encoder_out), self.num_heads)

    def forward(self, x: torch.Tensor, encoder_out=None) -> torch.Tensor:
        """x: [B, C, *spatial]; encoder_out: the text transformer's xf_out [B, xf_width, L], or a
        tuple with every attention layer's projected text keys/values (project_encoder_kv), read
        at this block's layer_index."""
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        if isinstance(encoder_out, (tuple, list)):
            ekv = encoder_out[self.layer_index]
        else:
            ekv = self.project_encoder_kv(encoder_out) if encoder_out is not None else None
        h = self.proj_out(qkv_attention(qkv, self.num_heads, ekv))
        return x + h.reshape(b, c, *spatial)
