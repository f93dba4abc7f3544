"""Text -> image with the base model alone: classifier-free (and/or CLIP) guidance, at its own size.

Upsampling is a separate stage (upsample.py); session.py chains the two for `glide sample` and
evaluation. Images are [N, 3, H, W] floats in [-1, 1].
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from training.diffusion.gaussian_diffusion import CondFn, GaussianDiffusion
from training.sampling.guidance import text_model_fn
from training.sampling.samplers import ProgressArg, sample_loop


def sample_text2im(model, diffusion: GaussianDiffusion, tokenizer, prompts: Sequence[str], *,
                   guidance_scale: Optional[float] = 3.0, method: str = "ddpm", eta: float = 0.0,
                   cond_fn: Optional[CondFn] = None, generator: Optional[torch.Generator] = None,
                   device=None, progress: ProgressArg = False, forward_batch: Optional[int] = None) -> torch.Tensor:
    """One image per prompt: [N, 3, S, S], S = model.image_size.

    guidance_scale None (or 1) samples plainly conditional; cond_fn adds CLIP guidance;
    forward_batch: see guidance.ClassifierFreeGuidance.
    """
    if device is None:
        device = next(model.parameters()).device
    model_fn = text_model_fn(model, tokenizer, prompts, guidance_scale, device=device, forward_batch=forward_batch)
    size = model.image_size
    shape = (len(prompts), 3, size, size)
    return sample_loop(diffusion, model_fn, shape, method=method, eta=eta, cond_fn=cond_fn, device=device,
                       generator=generator, progress=progress, desc="sampling")
