"""CLIP guidance plumbing: turn a differentiable score of noised images into a sampler cond_fn.

The samplers accept any `cond_fn(x [N,C,H,W], t [N] original steps) -> grad` (like x): the ancestral
sampler shifts the mean by variance * grad, DDIM shifts eps by -sqrt(1 - abar) * grad
(GaussianDiffusion.condition_mean / condition_score). For CLIP guidance (GLIDE section 3.2) the score
is the dot product of a noised-CLIP image embedding of x_t with the caption's text embedding, times
the guidance scale. For the project's NoisedCLIP use its builder, training.sampling.clip_cond
.clip_cond_fn (what `glide sample --clip` uses); the functions here take any callables.
When a cond_fn is given the samplers run under no_grad (not inference_mode) so autograd works here.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# score_fn(x [N,C,H,W] requiring grad, t [N]) -> [N] log p(y | x_t) up to a constant
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_cond_fn(score_fn: ScoreFn, scale: float = 1.0):
    """cond_fn(x, t) = scale * d/dx sum_i score_fn(x, t)_i (each image's own gradient)."""
    def cond_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            score = score_fn(x_in, t)
            (grad,) = torch.autograd.grad(score.sum(), x_in)
        return grad.detach() * scale
    return cond_fn


def clip_score_fn(image_embed_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  text_embeddings: torch.Tensor, logit_scale: float = 1.0) -> ScoreFn:
    """score(x, t) = logit_scale * <normalize(image_embed_fn(x, t)), normalize(text_embeddings)>: [N].

    image_embed_fn: the noised CLIP image tower, (x_t [N,3,H,W], t [N]) -> [N, D];
    text_embeddings: [N, D] (or [1, D], broadcast), computed once per run.
    """
    text = F.normalize(text_embeddings.detach().float(), dim=-1)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        image = F.normalize(image_embed_fn(x, t).float(), dim=-1)
        return logit_scale * (image * text).sum(dim=-1)
    return score_fn


def similarity_cond_fn(image_embed_fn, text_embeddings: torch.Tensor, guidance_scale: float,
                 logit_scale: float = 1.0):
    """The CLIP-guidance cond_fn: gradient of the scaled CLIP similarity, times guidance_scale."""
    return gradient_cond_fn(clip_score_fn(image_embed_fn, text_embeddings, logit_scale), guidance_scale)

