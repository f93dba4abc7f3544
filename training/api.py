"""`training.load(path)`: a checkpoint as a ready-to-sample model, diffusion and tokenizer.

    import training
    glide = training.load("runs/demo-base")          # a run folder: its latest export
    tokens, mask = glide.tokenizer.batch(["a red cube"], glide.config.text_ctx)
    eps_and_var = glide.model(x_t, t, tokens=tokens.to(glide.device), mask=mask.to(glide.device))
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path


class LoadedModel:
    """A loaded checkpoint: `.model` (eval mode, on `.device`), `.diffusion`, `.tokenizer`, `.config`.

    `.diffusion` and `.tokenizer` are built on first use (training.diffusion.create_diffusion with
    the config's schedule and `timestep_respacing`; the tokenizer from the config and the
    checkpoint's tokenizer/ folder).
    """

    def __init__(self, model, config, path: Path, step, meta: dict, timestep_respacing=None):
        self.model = model
        self.config = config
        self.path = path
        self.step = step
        self.meta = meta
        self.timestep_respacing = timestep_respacing

    @property
    def device(self):
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            import torch

            return torch.device("cpu")

    @cached_property
    def diffusion(self):
        from training.diffusion import create_diffusion

        return create_diffusion(self.config, timestep_respacing=self.timestep_respacing)

    @cached_property
    def tokenizer(self):
        from training.tokenizers import build_tokenizer

        return build_tokenizer(self.config.tokenizer, base_dir=self.path)

    def __repr__(self) -> str:
        return (f"LoadedModel(kind={self.config.kind!r}, step={self.step}, path='{self.path}', "
                f"device={self.device})")


def load(path: str | os.PathLike, *, device=None, use_ema: bool = True, timestep_respacing=None) -> LoadedModel:
    """Load a checkpoint folder, or a training run folder's latest export (RUN/exports/step-N/).

    device: default CUDA if present, else CPU. use_ema: prefer ema.safetensors when the checkpoint
    has it. timestep_respacing: e.g. "100" or "ddim50" for `.diffusion` (default: the config's).
    Bad or incomplete checkpoints raise shards.UserError naming the file.
    """
    from training.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, use_ema=use_ema, device=device)
    return LoadedModel(loaded.model, loaded.config, loaded.path, loaded.step, loaded.meta,
                       timestep_respacing=timestep_respacing)
