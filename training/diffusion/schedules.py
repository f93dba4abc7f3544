"""Noise schedules: the betas of the forward process q(x_t | x_{t-1}).

Names as glide-text2im: "squaredcos_cap_v2" (the cosine schedule of Improved DDPM, used by the base
model; "cosine" is accepted as an alias) and "linear" (Ho et al., used by the upsampler), both defined
for any number of steps so a schedule stays similar when `num_timesteps` changes.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

SCHEDULES = ("squaredcos_cap_v2", "cosine", "linear")


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha_bar(t), t in [0, 1], into `num_timesteps` betas (float64 [T]).

    beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T), capped at `max_beta` so the last step is not
    a singularity (alpha_bar(1) = 0 for the cosine schedule).
    """
    betas = [min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return np.asarray(betas, dtype=np.float64)


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """Improved DDPM's alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2)."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Betas (float64 [num_timesteps]) of a named schedule; ValueError for an unknown name."""
    if num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    if name == "linear":
        scale = 1000 / num_timesteps  # Ho et al.'s 1e-4..0.02 for 1000 steps, rescaled
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name in ("squaredcos_cap_v2", "cosine"):
        return betas_for_alpha_bar(num_timesteps, cosine_alpha_bar)
    raise ValueError(f"unknown noise schedule {name!r} (one of {', '.join(SCHEDULES)})")
