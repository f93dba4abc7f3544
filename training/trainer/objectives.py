"""What one training step computes for each model kind.

Diffusion kinds (base, upsampler, inpaint variants): Improved DDPM's hybrid loss
(`diffusion.training_losses`) at timesteps drawn uniformly, L_simple optionally P2-weighted, with the caption, the low-res image and
the inpainting inputs as model kwargs. clip: the noised CLIP's contrastive loss on x_t = q_sample(x0, t)
with the same noise schedule as the base; in the clean mode (`clip_mode: clean`, a CLIP for image
features) on the clean images x0 themselves at t = 0.

Randomness comes from a generator the caller seeds per step and rank, so a resumed run draws the
same timesteps and noise as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import functools

import torch

# batch keys passed to the diffusion model as kwargs, when present
CONDITIONING_KEYS = ("low_res", "inpaint_image", "inpaint_mask")


def forward_context(device_type: str, precision: str):
    """Autocast for bf16/fp16 runs: DeepSpeed casts the weights, autocast casts the activations
    (norms and the timestep embedding stay float32 where autocast keeps them so)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def sample_timesteps(batch_size: int, num_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform integer timesteps [B] in [0, num_timesteps)."""
    return torch.randint(0, num_timesteps, (batch_size,), generator=generator)


def loss_quartiles(t: torch.Tensor, losses: torch.Tensor, num_timesteps: int) -> dict[str, tuple[float, int]]:
    """Per-example losses [B] grouped by timestep quartile: {"loss_q0": (sum, count), ...}.

    (improved-diffusion logs the same: how well each quarter of the noise levels is fitted.)
    """
    quart = (t.cpu() * 4 // num_timesteps).clamp(0, 3)
    losses = losses.detach().float().cpu()
    out = {}
    for q in range(4):
        sel = quart == q
        out[f"loss_q{q}"] = (float(losses[sel].sum()), int(sel.sum()))
    return out


def diffusion_step_loss(model_fn, diffusion, batch: dict, generator: torch.Generator, device,
                        p2_gamma: float = 0.0, p2_k: float = 1.0) -> dict:
    """Hybrid loss of one micro-batch. batch: "x0" [B,3,H,W] in [-1,1], "tokens" [B,L], "mask" [B,L]
    (+ CONDITIONING_KEYS). p2_gamma > 0: L_simple weighted by diffusion.p2_weights.
    Returns {"loss": scalar with grad, "t": [B], "losses": [B], "mse", "vb"}."""
    x0 = batch["x0"].to(device, torch.float32)
    b = x0.shape[0]
    t = sample_timesteps(b, diffusion.num_timesteps, generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    kwargs = {"tokens": batch["tokens"].to(device), "mask": batch["mask"].to(device)}
    for key in CONDITIONING_KEYS:
        if batch.get(key) is not None:
            kwargs[key] = batch[key].to(device, torch.float32)
    weights = diffusion.p2_weights(t, p2_gamma, p2_k) if p2_gamma > 0 else None
    terms = diffusion.training_losses(model_fn, x0, t, model_kwargs=kwargs, noise=noise, mse_weights=weights)
    losses = terms["loss"]
    return {"loss": losses.mean(), "t": t, "losses": losses.detach(),
            "mse": terms["mse"].detach().mean(), "vb": terms["vb"].detach().mean()}


def clip_step_loss(model_fn, diffusion, batch: dict, generator: torch.Generator, device,
                   clean: bool = False, loss: str = "softmax") -> dict:
    """Noised-CLIP contrastive loss of one micro-batch: logits = model(x_t, t, tokens, mask) [B, B].
    clean: the clean CLIP's loss, on x0 at t = 0 (no noise drawn); loss: the model's
    contrastive_loss ("softmax" or "sigmoid")."""
    from training.data.caption_keys import positives_matrix
    from training.nn.noised_clip import clip_loss_function

    x0 = batch["x0"].to(device, torch.float32)
    b = x0.shape[0]
    if clean:
        t, x_t = torch.zeros(b, dtype=torch.long, device=device), x0
    else:
        t = sample_timesteps(b, diffusion.num_timesteps, generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = diffusion.q_sample(x0, t, noise=noise)
    tokens = batch["tokens"].to(device)
    logits = model_fn(x_t, t, tokens, batch["mask"].to(device)).float()
    positives = None
    if "described_keys" in batch:   # which texts are true of which images (training.data.caption_keys)
        positives = positives_matrix(batch["described_keys"], batch["text_keys"]).to(device)
    per_example = clip_loss_function(loss)(logits, tokens, reduction="none", positives=positives)  # per-t quartiles
    return {"loss": per_example.mean(), "t": t, "losses": per_example.detach()}


def step_loss_fn(kind: str, p2_gamma: float = 0.0, p2_k: float = 1.0, clip_mode: str = "noised",
                 clip_loss: str = "softmax"):
    if kind == "clip":
        return functools.partial(clip_step_loss, clean=clip_mode == "clean", loss=clip_loss)
    return functools.partial(diffusion_step_loss, p2_gamma=p2_gamma, p2_k=p2_k)
