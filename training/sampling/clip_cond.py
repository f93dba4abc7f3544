"""CLIP guidance: the gradient a sampler adds to the posterior mean, from a noised CLIP.

As glide-text2im's `CLIPModel.cond_fn`: with z_t the text embeddings (computed once) and
z_i(x_t, t) the image embeddings of the current noised sample,

    cond_fn(x_t, t) = guidance_scale * d/dx_t [ exp(logit_scale) * sum_b <z_i[b], z_t[b]> ]

so each sample is pushed along the gradient of its own prompt's CLIP logit. The sampler uses it as
mean + variance * cond_fn(x_t, t) (classifier guidance). `t` must be the timesteps of the schedule
the CLIP was trained under (the full 1000-step one): a respaced sampler maps its step indices to
the original timesteps before calling, as glide's respace wrapper does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def clip_cond_fn(clip_model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                 guidance_scale: float) -> Callable[..., torch.Tensor]:
    """-> cond_fn(x_t [B, 3, S, S], t [B], **model_kwargs) -> grad [B, 3, S, S] (detached).

    clip_model: a `NoisedCLIP`; tokens/mask: [B, L] or [1, L] (one prompt for the whole batch),
    framed by `training.nn.noised_clip.clip_tokens_and_mask`. Model kwargs the sampler passes on
    (tokens of the diffusion model, ...) are ignored. Gradients flow to x_t only: parameters'
    `.grad` are untouched and nothing is kept between calls.
    """
    device = next(clip_model.parameters()).device
    with torch.no_grad():
        z_text = clip_model.encode_text(tokens.to(device), mask.to(device)).detach()
        logit_scale = clip_model.logit_scale_value().detach()

    def cond_fn(x_t: torch.Tensor, t: torch.Tensor, **_model_kwargs) -> torch.Tensor:
        if z_text.shape[0] not in (1, x_t.shape[0]):
            raise ValueError(f"CLIP guidance has {z_text.shape[0]} prompts for a batch of {x_t.shape[0]}")
        with torch.enable_grad():
            x = x_t.detach().to(device=device, dtype=z_text.dtype).requires_grad_(True)
            z_image = clip_model.encode_image(x, t.to(device))
            logits = logit_scale * (z_image * z_text).sum()
            (grad,) = torch.autograd.grad(logits, x)
        return (grad.detach() * guidance_scale).to(device=x_t.device, dtype=x_t.dtype)

    return cond_fn


def clip_cond_fn_for_prompts(clip_model: torch.nn.Module, prompts: Sequence[str],
                             guidance_scale: float, tokenizer=None) -> Callable[..., torch.Tensor]:
    """clip_cond_fn from caption strings, tokenised with the CLIP BPE at the model's text length."""
    from training.nn.noised_clip import clip_tokens_and_mask

    if tokenizer is None:
        from training.tokenizers import build_tokenizer

        tokenizer = build_tokenizer({"type": "clip"})
    tokens, mask = clip_tokens_and_mask(tokenizer, list(prompts), clip_model.clip_config.max_text_len)
    return clip_cond_fn(clip_model, tokens, mask, guidance_scale)
