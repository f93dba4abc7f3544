import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def glide_cli():
    """Run the `glide` CLI in-process: returns (exit_code, stdout, stderr)."""
    from pipeline.cli import main

    def run(*argv, capsys=None):
        return main([str(a) for a in argv])

    return run


def run_glide(*argv, timeout=600, env=None, cwd=None):
    """Run `glide` as a real subprocess (what a user does)."""
    import subprocess

    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, argv)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
    )


def randomized(model, seed=0):
    """`model` with every parameter drawn from N(0, 0.1^2), in place: trained-like weights (glide
    zero-initialises the output convs, so a fresh model outputs exactly 0 and comparisons are empty)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def save_tiny_checkpoint(directory, config="tiny", *, randomize_seed=None, step=7, **overrides):
    """A real checkpoint folder (training.checkpoint.save_checkpoint) of model config `config` with
    `overrides` (kind, image_size, ...); weights from seed 0, or `randomized(seed=randomize_seed)`."""
    import torch

    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import ModelConfig, load_model_config

    base = {k: v for k, v in load_model_config(config).to_dict().items() if k not in ("inpaint", "super_res")}
    cfg = ModelConfig.from_dict({**base, **overrides}, source="test config")
    torch.manual_seed(0)
    model = create_model(cfg, device="cpu")
    if randomize_seed is not None:
        randomized(model, randomize_seed)
    return save_checkpoint(directory, model, cfg, step=step)


@pytest.fixture
def glide():
    return run_glide


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process models in tests are tiny: intra-op threads only add spin-waiting on 2 busy cores."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
