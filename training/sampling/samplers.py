"""Sampling loops: ancestral (DDPM) and DDIM, over any GaussianDiffusion (respaced or not).

A `model_fn(x [N,C,H,W], timesteps [N], **model_kwargs) -> [N, 2C, H, W]` is anything shaped like
the network: the network itself, a classifier-free-guided wrapper (guidance.py), ...

The loop runs under torch.inference_mode (or no_grad when a cond_fn needs autograd), builds the
timestep tensors on the device, and never reads a tensor back to the host, so GPU steps queue
without syncs. Editing (editing.py) hooks in through `denoised_fn` (pins pred_xstart),
`post_step_fn` (rewrites x after a step) and `start_step` (start part-way, from a noised image).
Progress (`progress=`): False/None for none, True for a `shards.Progress` of this loop's steps, or
a caller's Progress that the loop only advances (a session counts all its loops on one line).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

import torch

from shards import Progress
from training.diffusion.gaussian_diffusion import CondFn, GaussianDiffusion, ModelFn

METHODS = ("ddpm", "ddim")
# post_step_fn(x_prev, i) -> x_prev: called after step i (x_prev is at index i - 1; i == 0: x_0).
PostStepFn = Callable[[torch.Tensor, int], torch.Tensor]
ProgressArg = Union[bool, Progress, None]


@contextmanager
def step_progress(progress: ProgressArg, desc: str, total: int) -> Iterator[Optional[Progress]]:
    """The Progress to advance once per step: the caller's (left open), a new one closed at the end
    (progress=True), or None."""
    if isinstance(progress, Progress):
        yield progress
    elif progress:
        with Progress(desc, total, unit="steps") as own:
            yield own
    else:
        yield None


def sample_loop_progressive(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    method: str = "ddpm",
    noise: Optional[torch.Tensor] = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    denoised_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    cond_fn: Optional[CondFn] = None,
    model_kwargs: Optional[dict] = None,
    start_step: Optional[int] = None,
    post_step_fn: Optional[PostStepFn] = None,
    device=None,
    generator: Optional[torch.Generator] = None,
    progress: ProgressArg = False,
    desc: str = "sampling",
) -> Iterator[dict]:
    """Yield {"sample", "pred_xstart", "step"} after each step, from step `start_step` down to 0.

    noise: x at `start_step` (default: standard normal, i.e. x_T); start_step defaults to the
    last step. method "ddpm" is ancestral sampling with the learned variance; "ddim" uses `eta`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r} (one of {', '.join(METHODS)})")
    if device is None:
        device = noise.device if noise is not None else _device_of(model_fn)
    start = diffusion.num_timesteps - 1 if start_step is None else int(start_step)
    if not 0 <= start < diffusion.num_timesteps:
        raise ValueError(f"start_step {start} outside 0..{diffusion.num_timesteps - 1}")

    def randn(like_shape, dtype=torch.float32):
        return torch.randn(like_shape, generator=generator, device=device, dtype=dtype)

    grad_needed = cond_fn is not None  # inference tensors cannot enter autograd
    context = torch.no_grad() if grad_needed else torch.inference_mode()
    with context, step_progress(progress, desc, start + 1) as bar:
        x = noise.to(device) if noise is not None else randn(shape)
        n = x.shape[0]
        for i in range(start, -1, -1):
            t = torch.full((n,), i, device=device, dtype=torch.long)
            if method == "ddpm":
                out = diffusion.p_sample(model_fn, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs,
                                         noise=randn(x.shape, x.dtype) if i > 0 else torch.zeros_like(x))
            else:
                out = diffusion.ddim_sample(model_fn, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs,
                                            eta=eta, noise=randn(x.shape, x.dtype) if eta and i > 0 else None)
            x = out["sample"]
            if post_step_fn is not None:
                x = post_step_fn(x, i)
            if bar is not None:
                bar.update()
            yield {"sample": x, "pred_xstart": out["pred_xstart"], "step": i}


def sample_loop(diffusion: GaussianDiffusion, model_fn: ModelFn, shape, **kwargs) -> torch.Tensor:
    """The final x_0 [N,C,H,W] of `sample_loop_progressive` (same arguments)."""
    final = None
    for final in sample_loop_progressive(diffusion, model_fn, shape, **kwargs):
        pass
    return final["sample"]


def ddim_encode(diffusion: GaussianDiffusion, model_fn: ModelFn, x0: torch.Tensor, *, model_kwargs=None,
                clip_denoised: bool = False, progress: ProgressArg = False) -> torch.Tensor:
    """Run the deterministic DDIM ODE forwards: image x_0 -> its latent at the last step.

    The image stands for x at step 0 (abar_0 ~ 1); steps 0..T-2 each move one level up, so the
    result sits where sampling starts. Sampling it back with method="ddim", eta=0 reproduces x0
    up to discretisation error.
    """
    total = diffusion.num_timesteps - 1
    with torch.inference_mode(), step_progress(progress, "ddim encode", total) as bar:
        x = x0
        for i in range(total):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x = diffusion.ddim_reverse_sample(model_fn, x, t, clip_denoised, None, model_kwargs)["sample"]
            if bar is not None:
                bar.update()
    return x


def _device_of(model_fn) -> torch.device:
    """The device of a module, or of the module a wrapper holds (`.model`); else CPU."""
    for candidate in (model_fn, getattr(model_fn, "model", None)):
        if isinstance(candidate, torch.nn.Module):
            for p in candidate.parameters():
                return p.device
    return torch.device("cpu")
