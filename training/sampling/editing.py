"""Image editing with a diffusion model: inpainting (two modes) and SDEdit.

Masks here are KEEP masks, [N, 1, H, W] in {0, 1}: 1 = known pixel to keep, 0 = region to
regenerate (glide-text2im's inpaint notebook convention). The CLI converts a user's
"white = regenerate" mask with `keep = 1 - white`.

Inpainting modes:
  "finetuned"  the model was fine-tuned for inpainting: it sees inpaint_image (image * keep) and
               inpaint_mask (keep) as extra input (pass `inpaint_model_kwargs` to the model_fn), and
               each step's x_0 prediction is pinned to the known pixels (denoised_fn), as the
               glide-text2im notebook does.
  "replace"    any text-conditional model (GLIDE paper, Appendix E / RePaint-style): after every step
               the known region of x_{t-1} is replaced by a fresh sample of q(x_{t-1} | x_0) of the
               original image, and by the image itself at the end.
SDEdit (Meng et al.): noise the input (e.g. a sketch) to step t_start with q_sample and denoise
from there; lower t_start keeps more of the input.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from training.diffusion.gaussian_diffusion import GaussianDiffusion, ModelFn
from training.sampling.samplers import ProgressArg, sample_loop

INPAINT_MODES = ("finetuned", "replace")


def inpaint_model_kwargs(image: torch.Tensor, keep_mask: torch.Tensor) -> dict:
    """Extra inputs of an inpainting model: the known image (zero where unknown) and the keep mask."""
    return {"inpaint_image": image * keep_mask, "inpaint_mask": keep_mask}


def pin_known_region(image: torch.Tensor, keep_mask: torch.Tensor):
    """denoised_fn forcing pred_x0 to equal `image` where keep_mask is 1."""
    def denoised_fn(pred_xstart: torch.Tensor) -> torch.Tensor:
        return pred_xstart * (1 - keep_mask) + image * keep_mask
    return denoised_fn


def replace_known_region(diffusion: GaussianDiffusion, image: torch.Tensor, keep_mask: torch.Tensor,
                         generator: Optional[torch.Generator] = None):
    """post_step_fn for "replace" mode: x_{i-1}[known] <- q_sample(image, i-1)[known]; x_0[known] <- image."""
    def post_step_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        if i == 0:
            known = image
        else:
            t = torch.full((x.shape[0],), i - 1, device=x.device, dtype=torch.long)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            known = diffusion.q_sample(image, t, noise=noise)
        return x * (1 - keep_mask) + known * keep_mask
    return post_step_fn


def inpaint(diffusion: GaussianDiffusion, model_fn: ModelFn, image: torch.Tensor, keep_mask: torch.Tensor, *,
            mode: str = "finetuned", method: str = "ddpm", generator: Optional[torch.Generator] = None,
            progress: ProgressArg = False, **loop_kwargs) -> torch.Tensor:
    """Fill the region where keep_mask is 0. image [N,3,H,W] in [-1, 1]; keep_mask [N,1,H,W].

    For mode "finetuned", build model_fn with `**inpaint_model_kwargs(image, keep_mask)` as image
    kwargs (guidance.text_model_fn). Returns x_0 [N,3,H,W].
    """
    if mode not in INPAINT_MODES:
        raise ValueError(f"unknown inpainting mode {mode!r} (one of {', '.join(INPAINT_MODES)})")
    keep_mask = keep_mask.to(image.dtype)
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    if mode == "finetuned":
        return sample_loop(diffusion, model_fn, tuple(image.shape), noise=noise, method=method,
                           denoised_fn=pin_known_region(image, keep_mask), generator=generator,
                           progress=progress, desc="inpainting", **loop_kwargs)
    last = torch.full((image.shape[0],), diffusion.num_timesteps - 1, device=image.device, dtype=torch.long)
    noise = noise * (1 - keep_mask) + diffusion.q_sample(image, last, noise=noise) * keep_mask
    return sample_loop(diffusion, model_fn, tuple(image.shape), noise=noise, method=method,
                       post_step_fn=replace_known_region(diffusion, image, keep_mask, generator),
                       generator=generator, progress=progress, desc="inpainting", **loop_kwargs)


def sdedit_start_step(diffusion: GaussianDiffusion, *, strength: Optional[float] = None,
                      t_start: Optional[int] = None) -> int:
    """The step index to start SDEdit from.

    strength in (0, 1]: fraction of the sampling steps to run (1 = from pure noise);
    t_start: a step of the ORIGINAL process (0..T-1, e.g. 500 of 1000); the nearest kept step at
    or below it is used. Exactly one of the two.
    """
    if (strength is None) == (t_start is None):
        raise ValueError("give exactly one of strength and t_start")
    n = diffusion.num_timesteps
    if strength is not None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        return max(0, min(n - 1, math.ceil(strength * n) - 1))
    original = diffusion.timestep_map
    if not 0 <= t_start <= int(original[-1]):
        raise ValueError(f"t_start must be in 0..{int(original[-1])}, got {t_start}")
    return int((original <= t_start).sum()) - 1 if t_start >= original[0] else 0


def sdedit(diffusion: GaussianDiffusion, model_fn: ModelFn, image: torch.Tensor, *, start_step: int,
           method: str = "ddpm", generator: Optional[torch.Generator] = None, progress: ProgressArg = False,
           **loop_kwargs) -> torch.Tensor:
    """SDEdit: x_start = q_sample(image, start_step), then denoise to x_0. image [N,3,H,W] in [-1, 1]."""
    t = torch.full((image.shape[0],), start_step, device=image.device, dtype=torch.long)
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    x_start = diffusion.q_sample(image, t, noise=noise)
    return sample_loop(diffusion, model_fn, tuple(image.shape), noise=x_start, start_step=start_step,
                       method=method, generator=generator, progress=progress, desc="sdedit", **loop_kwargs)
