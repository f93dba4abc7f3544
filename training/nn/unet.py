"""ADM UNet building blocks and the UNet torso (glide-text2im's unet.py layout and maths).

State-dict keys match glide-text2im: time_embed.{0,2}, input_blocks.N.M..., middle_block.{0,1,2},
output_blocks.N.M..., out.{0,2}; ResBlock: in_layers.{0,2}, emb_layers.1, out_layers.{0,3},
skip_connection; AttentionBlock: norm, qkv, encoder_kv, proj_out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.nn.attention import AttentionBlock
from training.nn.layers import GroupNorm32, convert_modules, timestep_embedding, zero_module


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential):
    """Runs its children, giving ResBlocks the embedding and AttentionBlocks the text sequence."""

    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2, then an optional 3x3 conv. [B, C, H, W] -> [B, C', 2H, 2W]."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv, or 2x2 average pooling. [B, C, H, W] -> [B, C', H/2, W/2]."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            assert out_channels in (None, channels)
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with FiLM-like scale-shift conditioning, optionally resampling (up or down).

    x: [B, C, H, W], emb: [B, E] -> [B, out_channels, H', W'].
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, swish=1.0),
            nn.Identity(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(self.out_channels, swish=0.0 if use_scale_shift_norm else 1.0),
            nn.SiLU() if use_scale_shift_norm else nn.Identity(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class UNetModel(nn.Module):
    """The ADM UNet torso with timestep embedding and (optional) text keys/values in attention.

    attention_resolutions are downsample rates (1 = full resolution). The torso (input, middle and
    output blocks) runs in `self.dtype`; time_embed, norms and the output head stay float32.
    """

    def __init__(self, *, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions: tuple[int, ...], dropout: float = 0.0,
                 channel_mult: tuple[int, ...] = (1, 2, 4, 8), conv_resample: bool = True,
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 encoder_channels: int | None = None, use_checkpoint: bool = False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.conv_in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.use_checkpoint = use_checkpoint
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in, ch_out=None, **kw):
            return ResBlock(ch_in, emb_dim, dropout, out_channels=ch_out,
                            use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, num_heads=heads, num_head_channels=num_head_channels,
                                  encoder_channels=encoder_channels)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = input_block_chans.pop()
                layers = [res(ch + ich, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch, swish=1.0),
            nn.Identity(),
            zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1)),
        )
        for index, block in enumerate(self.attention_blocks()):
            block.layer_index = index

    def attention_blocks(self) -> list[AttentionBlock]:
        """The attention layers in module order (the order of precomputed text keys/values)."""
        return [m for m in self.modules() if isinstance(m, AttentionBlock)]

    def project_encoder_kv(self, xf_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """xf_out [B, D, L] -> every attention layer's text keys/values, each [B, heads, L, 2*head_ch]:
        what run_torso's xf_out may be instead, so the caption's projections run once per sampling run."""
        xf_out = xf_out.type(self.dtype)
        return tuple(block.project_encoder_kv(xf_out) for block in self.attention_blocks())

    @property
    def dtype(self) -> torch.dtype:
        """The torso's compute dtype: that of its convs (float32 unless converted)."""
        return self.input_blocks[0][0].weight.dtype

    def convert_torso_to_dtype(self, dtype: torch.dtype) -> None:
        """Cast the torso's convs to `dtype` (glide's convert_to_fp16); norms and linears stay fp32."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            convert_modules(part, dtype, (nn.Conv1d, nn.Conv2d))

    def _block(self, block: nn.Module, h, emb, xf_out):
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(block, h, emb, xf_out, use_reentrant=False)
        return block(h, emb, xf_out)

    def run_torso(self, x: torch.Tensor, emb: torch.Tensor, xf_out) -> torch.Tensor:
        """x: [B, conv_in_channels, H, W], emb: [B, 4*model_channels], xf_out: [B, D, L] (or its
        project_encoder_kv tuple) -> [B, out, H, W]."""
        hs = []
        h = x.type(self.dtype)
        if isinstance(xf_out, torch.Tensor):
            xf_out = xf_out.type(self.dtype)
        for block in self.input_blocks:
            h = self._block(block, h, emb, xf_out)
            hs.append(h)
        h = self._block(self.middle_block, h, emb, xf_out)
        for block in self.output_blocks:
            h = self._block(block, torch.cat([h, hs.pop()], dim=1), emb, xf_out)
        # the head runs in its own dtype (float32 after convert_to_dtype, as glide's; bf16 if all was cast)
        return self.out(h.type(self.out[2].weight.dtype))

    def embed_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, 4*model_channels]."""
        emb = timestep_embedding(timesteps, self.model_channels)
        return self.time_embed(emb.to(self.time_embed[0].weight.dtype))
