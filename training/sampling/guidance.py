"""Text conditioning and classifier-free guidance as model_fns for the samplers.

The text transformer runs ONCE per sampling run (`encode_prompts`), for the captions and one empty
caption together, and so do the attention layers' projections of the text into keys/values; every
step then passes the cached encoding as `text_emb=`.

Classifier-free guidance (GLIDE eq. 3, glide-text2im's model_fn): one batched forward over
[x, x] with [caption, empty caption] encodings, then
    eps = eps(x | empty) + s * (eps(x | caption) - eps(x | empty))
on the eps channels only; the variance channels come from the conditional half. The sampler sees a
batch of N (not 2N), so the diffusion arithmetic runs once per image.

Both model_fns run the network in channels-last (NHWC) memory (`channels_last_model`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def tokenize_prompts(tokenizer, prompts: Sequence[str], text_ctx: int, device=None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (tokens [N, text_ctx] long, mask [N, text_ctx] bool), padded as the model expects."""
    tokens, masks = [], []
    for prompt in prompts:
        toks, mask = tokenizer.padded_tokens_and_mask(tokenizer.encode(prompt) if prompt else [], text_ctx)
        tokens.append(list(toks))
        masks.append(list(mask))
    return (torch.tensor(tokens, dtype=torch.long, device=device),
            torch.tensor(masks, dtype=torch.bool, device=device))


def encode_prompts(model, tokenizer, prompts: Sequence[str], *, with_empty: bool, device=None) -> dict:
    """The text encoding (model.encode_text's dict) of `prompts` [N], followed by N empty captions
    when `with_empty` (for classifier-free guidance): batch N or 2N. Runs the transformer once, on
    the N captions and ONE empty caption (every empty row encodes the same; its row is repeated).
    Models with `add_encoder_kv` (Text2ImUNet) also get every attention layer's text keys/values
    projected here, once per run instead of once per step."""
    prompts = list(prompts)
    n = len(prompts)
    if with_empty:
        prompts = prompts + [""]
    tokens, mask = tokenize_prompts(tokenizer, prompts, model.text_ctx, device)
    with torch.no_grad():  # not inference_mode: a CLIP-guided loop may still need these in autograd
        text_emb = model.encode_text(tokens, mask)
        if hasattr(model, "add_encoder_kv"):
            text_emb = model.add_encoder_kv(text_emb)
    if with_empty:
        text_emb = _repeat_last_row(text_emb, n)
    return text_emb


def _repeat_last_row(value, times: int):
    """[M+1, ...] -> [M+times, ...]: the last row repeated `times` times (in dicts / tuples too)."""
    if isinstance(value, torch.Tensor):
        return torch.cat([value[:-1], value[-1:].expand(times, *value.shape[1:])])
    if isinstance(value, dict):
        return {k: _repeat_last_row(v, times) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat_last_row(v, times) for v in value)
    return value


def _repeat_batch(value, times: int):
    if isinstance(value, torch.Tensor):
        return torch.cat([value] * times) if times > 1 else value
    if isinstance(value, dict):
        return {k: _repeat_batch(v, times) for k, v in value.items()}
    return value


def _slice_batch(value, piece: slice):
    if isinstance(value, torch.Tensor):
        return value[piece]
    if isinstance(value, dict):
        return {k: _slice_batch(v, piece) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_slice_batch(v, piece) for v in value)
    return value


def channels_last_model(model):
    """Convert `model`'s 4-D weights to channels-last (NHWC) memory, in place, and return it.

    The model_fns below run the network on NHWC activations: oneDNN (CPU) and cuDNN (GPU, tensor
    cores) run NHWC convolutions without a layout reorder on every call. Values are unchanged;
    measured on one CPU thread: 1.20x (tiny) and 1.09x (released base) per forward
    (benchmarks/sampling.py). Training is unaffected: it never goes through here."""
    if any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()):
        model.to(memory_format=torch.channels_last)
    return model


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class TextConditioned:
    """model_fn for plain conditional sampling: model(x, t, text_emb=..., **image_kwargs).

    text_emb: encoding of N captions; image_kwargs: per-image inputs of batch N
    (low_res [N,3,h,w] for upsamplers; inpaint_image / inpaint_mask for inpainting models).
    """

    def __init__(self, model, text_emb: Optional[dict], **image_kwargs):
        self.model = channels_last_model(model)
        self.text_emb = text_emb
        self.image_kwargs = {k: _nhwc(v) for k, v in image_kwargs.items() if v is not None}

    def __call__(self, x, t, **kwargs):
        return self.model(_nhwc(x), t, text_emb=self.text_emb, **self.image_kwargs, **kwargs)


# glibc serves allocations above its largest mmap threshold (32 MiB on 64-bit) from fresh mmap'd
# pages, so every such activation is page-faulted and zeroed by the kernel again at every step.
CPU_ACTIVATION_BUDGET = 32 * 2 ** 20


def auto_forward_batch(model, x: torch.Tensor) -> int:
    """Rows per network call for the 2N guided rows of x [2N, C, H, W]: all of them, except on CPU
    when the widest activation (a full-resolution skip concatenation, 2 x the first conv's channels)
    would exceed CPU_ACTIVATION_BUDGET: then equal pieces that fit. Measured on the released base
    (64x64, 2N = 8; one thread): one call of 8 rows took ~3x the minor page faults of two calls of 4
    (~650k vs ~200k per step, +0.7 s system time) and was slower (benchmarks/sampling.py)."""
    rows = x.shape[0]
    blocks = getattr(model, "input_blocks", None)  # the UNet's; other model_fns run in one call
    first_conv = blocks[0][0] if blocks is not None else None
    if x.device.type != "cpu" or not isinstance(first_conv, torch.nn.Conv2d):
        return rows
    row_bytes = 2 * first_conv.out_channels * x.shape[-2] * x.shape[-1] * first_conv.weight.element_size()
    pieces = -(-rows * row_bytes // CPU_ACTIVATION_BUDGET)  # ceil
    return max(1, -(-rows // max(1, pieces)))


class ClassifierFreeGuidance:
    """model_fn for classifier-free guided sampling with guidance scale `scale` (see module doc).

    text_emb: encoding of [N captions, N empty captions] (encode_prompts(..., with_empty=True));
    image_kwargs: per-image inputs of batch N, duplicated here once, not per step.
    forward_batch: most rows per network call (a smaller value also bounds activation memory);
    None chooses (`auto_forward_batch`): all 2N rows in one call, except on CPU when that call's
    activations are so large that each allocation page-faults (see there).
    Returns [N, 2C, H, W]: guided eps, then the conditional half's variance channels.
    """

    def __init__(self, model, scale: float, text_emb: dict, forward_batch: Optional[int] = None, **image_kwargs):
        self.model = channels_last_model(model)
        self.scale = float(scale)
        self.text_emb = text_emb
        self.forward_batch = forward_batch
        self.image_kwargs = {k: _nhwc(_repeat_batch(v, 2)) for k, v in image_kwargs.items() if v is not None}

    def _network(self, x2, t2, **kwargs):
        rows = x2.shape[0]
        step = self.forward_batch or auto_forward_batch(self.model, x2)
        if step >= rows:
            return self.model(x2, t2, text_emb=self.text_emb, **self.image_kwargs, **kwargs)
        parts = []
        for i in range(0, rows, step):
            piece = slice(i, i + step)
            parts.append(self.model(x2[piece], t2[piece], text_emb=_slice_batch(self.text_emb, piece),
                                    **_slice_batch(self.image_kwargs, piece), **kwargs))
        return torch.cat(parts)

    def __call__(self, x, t, **kwargs):
        n, channels = x.shape[0], x.shape[1]
        out = self._network(_nhwc(torch.cat([x, x])), torch.cat([t, t]), **kwargs)
        cond_eps, uncond_eps = out[:n, :channels], out[n:, :channels]
        eps = torch.lerp(uncond_eps, cond_eps, self.scale)  # uncond + s * (cond - uncond)
        return torch.cat([eps, out[:n, channels:]], dim=1)


def text_model_fn(model, tokenizer, prompts: Sequence[str], guidance_scale: Optional[float], *,
                  device=None, forward_batch: Optional[int] = None, **image_kwargs):
    """The model_fn for sampling `prompts`: classifier-free guided when guidance_scale is set
    (and != 1), else plain conditional. Encodes the text once, here."""
    guided = guidance_scale is not None and float(guidance_scale) != 1.0
    text_emb = encode_prompts(model, tokenizer, prompts, with_empty=guided, device=device)
    if guided:
        return ClassifierFreeGuidance(model, guidance_scale, text_emb, forward_batch=forward_batch, **image_kwargs)
    return TextConditioned(model, text_emb, **image_kwargs)
