"""The 64 -> 256 upsampling stage (glide-text2im's text2im notebook, GLIDE section 4).

The upsampler is sampled with the "fast27" respacing, conditioned on the caption (no guidance) and
on the base samples quantised to 8 bits (what it saw in training), starting from noise scaled by
an upsample temperature slightly below 1 (0.997), which gives cleaner, slightly less noisy images.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from training.diffusion.gaussian_diffusion import GaussianDiffusion
from training.sampling.guidance import TextConditioned, encode_prompts
from training.sampling.samplers import ProgressArg, sample_loop

DEFAULT_TEMPERATURE = 0.997
DEFAULT_RESPACING = "fast27"


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of a uint8 image (still in [-1, 1])."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [N,3,S,S] -> [N,3,size,size]: how training makes an upsampler's low_res from its target (bicubic,
    antialiased; training.data.batches)."""
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def low_res_consistency(low_res: torch.Tensor):
    """denoised_fn holding the upsampler to its input: each prediction of x_0 gets the difference
    between low_res and its own downsampled self added back (upsampled bilinearly), so the sample
    downsamples to low_res and keeps its colours and layout, while the model adds the detail above the
    low-res band. The idea of ILVR (Choi et al. 2021) applied to x_0 instead of x_t."""
    def denoised_fn(pred_xstart: torch.Tensor) -> torch.Tensor:
        size = pred_xstart.shape[-1]
        error = low_res.to(pred_xstart.dtype) - downsample(pred_xstart, low_res.shape[-1])
        return pred_xstart + F.interpolate(error, size=(size, size), mode="bilinear", align_corners=False)
    return denoised_fn


def upsample(model, diffusion: GaussianDiffusion, tokenizer, prompts: Sequence[str], low_res: torch.Tensor, *,
             temperature: float = DEFAULT_TEMPERATURE, method: str = "ddpm",
             generator: Optional[torch.Generator] = None, progress: ProgressArg = False,
             denoised_fn=None, **image_kwargs) -> torch.Tensor:
    """Upsample low_res [N,3,h,w] (in [-1, 1]) for captions `prompts` [N] -> [N,3,S,S], S = model.image_size.

    image_kwargs / denoised_fn: for an inpainting upsampler, editing.inpaint_model_kwargs(image, keep)
    at the upsampler's size and editing.pin_known_region(image, keep).
    """
    if len(prompts) != low_res.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {low_res.shape[0]} images")
    text_emb = encode_prompts(model, tokenizer, prompts, with_empty=False, device=low_res.device)
    model_fn = TextConditioned(model, text_emb, low_res=quantize_8bit(low_res), **image_kwargs)
    size = model.image_size
    shape = (low_res.shape[0], 3, size, size)
    noise = torch.randn(shape, generator=generator, device=low_res.device, dtype=low_res.dtype) * temperature
    return sample_loop(diffusion, model_fn, shape, noise=noise, method=method, generator=generator,
                       denoised_fn=denoised_fn, progress=progress, desc="upsampling")
