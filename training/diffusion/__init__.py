"""Diffusion maths: schedules, the Gaussian process, likelihood terms, respacing.

`create_diffusion(cfg, timestep_respacing=None)` is the one factory: the process a model config
(training.model_config.ModelConfig) was trained with, optionally respaced for sampling.
"""
from __future__ import annotations

from training.diffusion.gaussian_diffusion import GaussianDiffusion
from training.diffusion.respace import respaced_diffusion, space_timesteps
from training.diffusion.schedules import get_named_beta_schedule

__all__ = ["GaussianDiffusion", "create_diffusion", "get_named_beta_schedule", "respaced_diffusion",
           "space_timesteps"]


def create_diffusion(cfg, timestep_respacing: str | None = None) -> GaussianDiffusion:
    """The diffusion of model config `cfg` (diffusion_steps, noise_schedule, timestep_respacing).

    timestep_respacing: None uses cfg.timestep_respacing; "" keeps every step; else a spec for
    `space_timesteps` ("100", "fast27", "ddim25", "10,10,3,2,2").
    Raises shards.UserError for an unknown schedule or a bad spec.
    """
    from shards import UserError

    spec = cfg.timestep_respacing if timestep_respacing is None else timestep_respacing
    try:
        betas = get_named_beta_schedule(cfg.noise_schedule, cfg.diffusion_steps)
        if not spec:
            return GaussianDiffusion(betas)
        return respaced_diffusion(betas, space_timesteps(cfg.diffusion_steps, str(spec)))
    except ValueError as e:
        raise UserError(f"diffusion settings: {e}") from None
