"""The two towers of GLIDE's noised CLIP: a ViT over noised images x_t and a causal text transformer.

Module and parameter names mirror openai/glide-text2im `glide_text2im/clip/encoders.py` so that the
released `clip_image_enc.pt` / `clip_text_enc.pt` load by key:

    blocks.input.{w_voc,w_pos}                          text embedding
    blocks.input.{w_t,patch_proj,w_pos,ln.g,ln.b}       image embedding (w_t: timestep table)
    blocks.block_{i}.f_attn.{ln.g,ln.b,f_q.w,f_q.b,f_k.w,f_v.w,f_v.b,f_c.w,f_c.b}
    blocks.block_{i}.f_mlp.{ln.g,ln.b,f_1.w,f_1.b,f_2.w,f_2.b}
    blocks.output.{ln.g,ln.b,f.w}                       projection to the joint space (no bias)

Maths notes (why the code differs in form but not in value from the reference):
- glide pads the context to a multiple of 32 and masks padded keys with a -1e10 bias; the padded keys
  get exactly zero weight and padded queries are dropped, so unpadded scaled_dot_product_attention
  (full for images, causal for text) computes the same thing.
- glide scales q and k by sqrt(1/sqrt(d)) each; that is SDPA's default 1/sqrt(d) scale.
- The timestep embedding w_t[t] *replaces* the class ("start") token of the ViT; its final state,
  after a LayerNorm, is projected to the joint space.
- The key projection has no bias (softmax is invariant to it). glide also filters the q/v bias
  gradients with a hook written for a fused qkv layout; that only changes training gradients of two
  biases, not the function, and is not reproduced.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# Pixel statistics of the original CLIP (on the 0..255 scale); not part of the checkpoint.
IMAGE_CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)


def _normal(shape: tuple[int, ...], std: float) -> nn.Parameter:
    """A float32 parameter drawn from N(0, std^2) on the current default device (meta works)."""
    p = torch.empty(shape, dtype=torch.float32)
    if p.device.type != "meta":
        nn.init.normal_(p, std=std)
    return nn.Parameter(p)


def _register_pixel_statistics(module: nn.Module) -> None:
    """CLIP's pixel means and stds as non-persistent buffers of `module`.

    Constants, not weights: kept out of the state dict like in the released checkpoint. Held in
    float64 and rounded to the input's dtype (float32 gives glide's values exactly).
    """
    for name, values in (("channel_means", IMAGE_CHANNEL_MEANS), ("channel_stds", IMAGE_CHANNEL_STDS)):
        module.register_buffer(name, torch.tensor(values, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)


def _checked_inputs(module: nn.Module, pixels: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels normalised by CLIP's statistics, integral timesteps) after checking their shapes against
    `module.image_size`."""
    s = module.image_size
    if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, s, s):
        raise ValueError(f"images must be [B, 3, {s}, {s}], got {list(pixels.shape)}")
    if t.dim() != 1 or t.shape[0] != pixels.shape[0]:
        raise ValueError(f"timesteps must be [B={pixels.shape[0]}], got {list(t.shape)}")
    if t.is_floating_point():  # samplers may hand integral timesteps as floats
        t = t.round()
    return (pixels - module.channel_means.to(pixels.dtype)) / module.channel_stds.to(pixels.dtype), t


class LayerNorm(nn.Module):
    """LayerNorm with glide's parameter names `g` (gain) and `b` (bias)."""

    def __init__(self, n_state: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # glide normalises in float32 (the parameters' dtype); a float64 model stays float64.
        return F.layer_norm(x.to(self.g.dtype), self.g.shape, self.g, self.b, self.eps)


class Affine(nn.Module):
    """Linear layer with glide's names: weight `w` [n_out, n_in], optional bias `b` [n_out]."""

    def __init__(self, n_in: int, n_out: int, use_bias: bool = True, std: float | None = None):
        super().__init__()
        self.w = _normal((n_out, n_in), std if std is not None else math.sqrt(2 / (n_in + n_out)))
        self.b = nn.Parameter(torch.zeros(n_out)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.b is None else self.b.to(x.dtype)
        return F.linear(x, self.w.to(x.dtype), b)


class AttentionResblock(nn.Module):
    """Pre-norm multi-head self-attention with a residual. x: [B, N, n_state] -> same."""

    def __init__(self, n_state: int, n_head: int, n_resblocks: int, causal: bool):
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state {n_state} is not divisible by n_head {n_head}")
        self.n_head, self.causal = n_head, causal
        self.ln = LayerNorm(n_state)
        qkv_std = 1 / math.sqrt(n_state)
        self.f_q = Affine(n_state, n_state, use_bias=True, std=qkv_std)
        self.f_k = Affine(n_state, n_state, use_bias=False, std=qkv_std)
        self.f_v = Affine(n_state, n_state, use_bias=True, std=qkv_std)
        self.f_c = Affine(n_state, n_state, use_bias=True, std=1 / math.sqrt(n_state * n_resblocks**2))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        b, n, c = m.shape
        r = self.ln(m)

        def heads(y: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, H, N, C/H]
            return y.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)

        q, k, v = heads(self.f_q(r)), heads(self.f_k(r)), heads(self.f_v(r))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return m + self.f_c(a.transpose(1, 2).reshape(b, n, c))


class FullyConnectedResblock(nn.Module):
    """Pre-norm MLP (4x width, exact GELU) with a residual."""

    def __init__(self, n_state: int, n_resblocks: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f_1 = Affine(n_state, 4 * n_state, std=math.sqrt(2 / (4 * n_state)))
        self.f_2 = Affine(4 * n_state, n_state, std=1 / math.sqrt(n_state * n_resblocks**2))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m + self.f_2(F.gelu(self.f_1(self.ln(m))))


class TransformerBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, n_resblocks: int, causal: bool):
        super().__init__()
        self.f_attn = AttentionResblock(n_state, n_head, n_resblocks, causal)
        self.f_mlp = FullyConnectedResblock(n_state, n_resblocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x))


class TextEmbedding(nn.Module):
    """tokens [B, L] (L <= n_context) -> [B, L, n_state]: token table plus learned positions."""

    def __init__(self, n_vocab: int, n_context: int, n_state: int):
        super().__init__()
        self.w_voc = _normal((n_vocab, n_state), 0.02)
        self.w_pos = _normal((n_context, n_state), 0.01)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.w_pos.shape[0]:
            raise ValueError(f"tokens must be [B, <= {self.w_pos.shape[0]}], got {list(tokens.shape)}")
        return F.embedding(tokens, self.w_voc) + self.w_pos[None, : tokens.shape[1]]


def conv_patch_stem(patch_size: int, n_state: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions, GELU between them: [B, 3, S, S] -> [B, n_state, S/p, S/p].

    Channels double from 32 up to n_state at the last one ("Early convolutions help transformers see
    better", Xiao et al. 2021): a patch token then sees its pixels through a small CNN instead of one
    linear map, and a small ViT trained from scratch picks up small objects much sooner.
    """
    steps = patch_size.bit_length() - 1
    if steps < 1 or 1 << steps != patch_size:
        raise ValueError(f"patch_size {patch_size}: the conv stem needs a power of 2 >= 2")
    widths = [3] + [min(32 << k, n_state) for k in range(steps - 1)] + [n_state]
    layers: list[nn.Module] = []
    for k in range(steps):
        layers.append(nn.Conv2d(widths[k], widths[k + 1], 3, stride=2, padding=1))
        if k < steps - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class ImageEmbedding(nn.Module):
    """Pixels [B, 3, S, S] on the 0..255 scale and timesteps [B] -> tokens [B, 1 + (S/p)^2, n_state].

    The first token is w_t[t], the embedding of the diffusion timestep, in place of CLIP's class token.
    Patches become tokens by one strided linear projection (`patch_stem` "linear", glide's) or a
    small stack of convolutions (`conv_patch_stem`).
    """

    def __init__(self, image_size: int, patch_size: int, n_state: int, n_timestep: int, patch_stem: str = "linear"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.n_state = image_size, patch_size, n_state
        n_patch = (image_size // patch_size) ** 2
        self.w_t = _normal((n_timestep, n_state), 1 / math.sqrt(n_state))
        if patch_stem == "conv":
            self.patch_stem = conv_patch_stem(patch_size, n_state)
        elif patch_stem == "linear":
            self.patch_proj = _normal((n_state, 3, patch_size, patch_size),
                                      math.sqrt(2 / (n_state * patch_size**2)))
        else:
            raise ValueError(f"patch_stem {patch_stem!r}: 'linear' or 'conv'")
        self.w_pos = _normal((1 + n_patch, n_state), 1 / math.sqrt(n_state))
        self.ln = LayerNorm(n_state)
        _register_pixel_statistics(self)

    def forward(self, pixels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, t = _checked_inputs(self, pixels, t)
        if hasattr(self, "patch_stem"):
            x = self.patch_stem(x)  # [B, C, S/p, S/p]
        else:
            x = F.conv2d(x, self.patch_proj.to(x.dtype), stride=self.patch_size)  # [B, C, S/p, S/p]
        x = x.flatten(2).transpose(1, 2)  # [B, (S/p)^2, C]
        time_token = F.embedding(t.long(), self.w_t)[:, None].to(x.dtype)
        x = torch.cat((time_token, x), dim=1) + self.w_pos[None].to(x.dtype)
        return self.ln(x)


class TextFeatureExtractor(nn.Module):
    """States [B, L, n_state] and lengths [B] -> [B, n_embd] from the last real (EOT) token."""

    def __init__(self, n_state: int, n_embd: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, use_bias=False)

    def forward(self, h: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        index = (text_len.long() - 1)[:, None, None].expand(-1, 1, h.shape[2])
        return self.f(self.ln(torch.gather(h, 1, index)[:, 0]))


class ImageFeatureExtractor(nn.Module):
    """States [B, N, n_state] -> [B, n_embd] from the first (timestep) token."""

    def __init__(self, n_state: int, n_embd: int):
        super().__init__()
        self.ln = LayerNorm(n_state)
        self.f = Affine(n_state, n_embd, use_bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.f(self.ln(h[:, 0]))


class TextEncoder(nn.Module):
    """tokens [B, L] and lengths [B] (SOT ... EOT counted, zero padding after) -> [B, n_embd].

    Causal attention, so the zero padding after the EOT token never reaches the output.
    """

    def __init__(self, n_vocab: int, max_text_len: int, n_embd: int, n_head: int, n_xf_blocks: int,
                 n_head_state: int = 64):
        super().__init__()
        self.max_text_len, self.n_xf_blocks = max_text_len, n_xf_blocks
        n_state = n_head * n_head_state
        blocks: list[tuple[str, nn.Module]] = [("input", TextEmbedding(n_vocab, max_text_len, n_state))]
        blocks += [(f"block_{i}", TransformerBlock(n_state, n_head, 2 * n_xf_blocks, causal=True))
                   for i in range(n_xf_blocks)]
        blocks.append(("output", TextFeatureExtractor(n_state, n_embd)))
        self.blocks = nn.ModuleDict(OrderedDict(blocks))

    def forward(self, tokens: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        h = self.blocks["input"](tokens)
        for i in range(self.n_xf_blocks):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h, text_len)


class ImageEncoder(nn.Module):
    """Pixels [B, 3, S, S] (0..255) and timesteps [B] (ints in [0, n_timestep)) -> [B, n_embd]."""

    def __init__(self, image_size: int, patch_size: int, n_embd: int, n_head: int, n_xf_blocks: int,
                 n_head_state: int = 64, n_timestep: int = 1000, patch_stem: str = "linear"):
        super().__init__()
        self.image_size, self.n_xf_blocks = image_size, n_xf_blocks
        n_state = n_head * n_head_state
        blocks: list[tuple[str, nn.Module]] = [
            ("input", ImageEmbedding(image_size, patch_size, n_state, n_timestep, patch_stem))]
        blocks += [(f"block_{i}", TransformerBlock(n_state, n_head, 2 * n_xf_blocks, causal=False))
                   for i in range(n_xf_blocks)]
        blocks.append(("output", ImageFeatureExtractor(n_state, n_embd)))
        self.blocks = nn.ModuleDict(OrderedDict(blocks))

    def forward(self, pixels: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        h = self.blocks["input"](pixels, timesteps)
        for i in range(self.n_xf_blocks):
            h = self.blocks[f"block_{i}"](h)
        return self.blocks["output"](h)


class ConvImageEncoder(nn.Module):
    """A convolutional image tower (`image_tower: "conv"`): pixels [B, 3, S, S] (0..255), timesteps [B] -> [B, n_embd].

    Per width a block of two 3x3 convolutions (GroupNorm, ReLU) and a 2x2 max pool; then a global max
    pool over what is left, a LayerNorm and a linear map to the joint space. The global max pool asks
    "is it anywhere in the image", which is what a caption clause such as "with a knife" asks of a
    stand-in that may be small and anywhere: a supervised CNN of this shape reaches the filters' bar on
    the sample world (benchmarks.clip_probe --ceiling) where a small ViT trained contrastively did
    not. GroupNorm, not BatchNorm: the same function in training and inference, for EMA weights and
    batches of one. The timestep enters each block as a per-channel bias (zero at init, as the
    diffusion UNet's resblocks take it), so a clean CLIP (t = 0 always) is this network plus constants.
    """

    def __init__(self, image_size: int, widths: list[int] | tuple[int, ...], n_embd: int, n_timestep: int = 1000):
        super().__init__()
        if image_size % (1 << len(widths)):
            raise ValueError(f"image_size {image_size} is not a multiple of 2^{len(widths)} (one pool per width)")
        self.image_size = image_size
        self.blocks = nn.ModuleList()
        self.time_bias = nn.ModuleList()
        c_in = 3
        for width in widths:
            self.blocks.append(nn.Sequential(
                nn.Conv2d(c_in, width, 3, padding=1), nn.GroupNorm(_groups(width), width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(_groups(width), width), nn.ReLU(),
                nn.MaxPool2d(2)))
            bias = nn.Embedding(n_timestep, width)
            nn.init.zeros_(bias.weight)  # a no-op on the meta device
            self.time_bias.append(bias)
            c_in = width
        self.ln = LayerNorm(c_in)
        self.proj = Affine(c_in, n_embd, use_bias=False)
        _register_pixel_statistics(self)

    def forward(self, pixels: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        h, t = _checked_inputs(self, pixels, timesteps)
        t = t.long()
        for block, bias in zip(self.blocks, self.time_bias):
            h = block(h) + bias(t)[:, :, None, None].to(h.dtype)
        return self.proj(self.ln(h.amax(dim=(2, 3))))


def _groups(width: int) -> int:
    """GroupNorm groups: 8 where the width allows, else the largest divisor of it up to 8."""
    return max(g for g in range(1, 9) if width % g == 0)
