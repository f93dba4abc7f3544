"""The caption encoder: a CLIP-style pre-LN transformer (glide-text2im's xf.py layout).

No attention mask: padded positions are handled by the caller (Text2ImUNet swaps them for a learned
padding embedding), exactly as in GLIDE. Key names: resblocks.N.{ln_1, attn.c_qkv, attn.c_proj,
ln_2, mlp.c_fc, mlp.c_proj}. c_qkv's output is laid out per head as [q_h | k_h | v_h].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.nn.layers import LayerNorm32


class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, W] -> [B, L, W] (full, unmasked self-attention)."""
        b, n, w = x.shape
        qkv = self.c_qkv(x).view(b, n, self.heads, -1)
        q, k, v = qkv.split(w // self.heads, dim=-1)  # each [B, L, H, c]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.c_proj(out.transpose(1, 2).reshape(b, n, w))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """[B, L, W] -> [B, L, W]; optional activation checkpointing per block."""

    def __init__(self, n_ctx: int, width: int, layers: int, heads: int, use_checkpoint: bool = False):
        super().__init__()
        self.n_ctx, self.width, self.layers = n_ctx, width, layers
        self.use_checkpoint = use_checkpoint
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
