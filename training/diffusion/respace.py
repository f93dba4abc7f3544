"""Timestep respacing: sample a model trained on T steps with fewer steps.

`space_timesteps(T, spec)` picks which original steps to keep (glide-text2im's rules):
  "250" / "10,10,3,2,2"  split the T steps into len(list) equal sections and take that many
                         evenly strided steps from each (first section gets the remainder first);
  "fast27"               "10,10,3,2,2" with step T-1 swapped for T-3 (fewer artefacts from the
                         noisiest steps; the 27-step upsampler schedule);
  "ddimN"                N steps with one integer stride (the DDIM paper's striding);
  "" / None              every step.
`respaced_diffusion` builds the process over the kept steps: betas chosen so that the cumulative
alphas at the kept steps are exactly the original ones, and a timestep_map back to original steps.
"""
from __future__ import annotations

import numpy as np

from training.diffusion.gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, spec) -> set[int]:
    """The set of original steps to keep; ValueError when `spec` cannot be honoured."""
    if spec is None or spec == "":
        return set(range(num_timesteps))
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.startswith("ddim"):
            try:
                want = int(spec[len("ddim"):])
            except ValueError:
                raise ValueError(f"bad respacing {spec!r}: expected ddimN, e.g. ddim50") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {want} steps of {num_timesteps} with an integer stride")
        if spec == "fast27":
            steps = space_timesteps(num_timesteps, "10,10,3,2,2")
            steps.remove(num_timesteps - 1)
            steps.add(num_timesteps - 3)
            return steps
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}: expected N, N,N,..., fast27 or ddimN") from None
    else:
        counts = [int(c) for c in spec]
    if not counts or any(c < 0 for c in counts):
        raise ValueError(f"bad respacing {spec!r}: section counts must be non-negative")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return set(kept)


def respaced_diffusion(betas, use_timesteps) -> GaussianDiffusion:
    """The process over `use_timesteps` (original indices) of the process with `betas`."""
    base = GaussianDiffusion(betas)
    keep = sorted(set(int(s) for s in use_timesteps))
    if not keep or keep[0] < 0 or keep[-1] >= base.num_timesteps:
        raise ValueError("use_timesteps must be a non-empty subset of the original steps")
    new_betas, last = [], 1.0
    for step in keep:
        abar = base.alphas_cumprod[step]
        new_betas.append(1.0 - abar / last)
        last = abar
    return GaussianDiffusion(np.array(new_betas), timestep_map=np.array(keep))
