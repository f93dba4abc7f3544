"""Gaussian diffusion maths: forward process, posterior, the model's p(x_{t-1} | x_t), the hybrid loss.

GLIDE's parameterisation (as glide-text2im and Improved DDPM): the network predicts eps (first C
output channels) and a learned-range variance interpolation v in [-1, 1] (last C channels):
    log sigma_t^2 = frac * log beta_t + (1 - frac) * log beta~_t,   frac = (v + 1) / 2
where beta~_t is the posterior variance. The maths is model-agnostic: a "model" is any callable
`model(x_t [N,C,H,W], timesteps [N], **model_kwargs) -> [N, 2C, H, W]`.

Timestep indices `t` are indices into *this* process (0..num_timesteps-1). A respaced process
(respace.py) keeps a `timestep_map` from its indices to the original process's steps; the model and
`cond_fn` always receive original steps (`model_timesteps(t)`), so they never know about respacing.

Coefficient tables are computed in float64 on the host once, then cached per (device, dtype) as
tensors, so a sampling step indexes device tensors and never syncs with the host.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from training.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl

ModelFn = Callable[..., torch.Tensor]
# cond_fn(x [N,C,H,W], original timesteps [N]) -> grad of log p(y | x_t) w.r.t. x, like x.
CondFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOG2 = float(np.log(2.0))


class GaussianDiffusion:
    """A diffusion process given by its betas (float64 [T]); see the module docstring."""

    def __init__(self, betas, timestep_map=None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        self.timestep_map = (np.arange(self.num_timesteps, dtype=np.int64) if timestep_map is None
                             else np.asarray(timestep_map, dtype=np.int64))
        if self.timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one entry per beta")

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0: clip its log to the t = 1 value.
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]) if self.num_timesteps > 1
            else np.maximum(self.posterior_variance, 1e-20))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)
        self._device_tables: dict = {}

    # ---- coefficient lookup -------------------------------------------------------------------
    _TABLES = ("alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next", "sqrt_alphas_cumprod",
               "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
               "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
               "posterior_mean_coef2", "log_betas")

    def _tables(self, device: torch.device, dtype: torch.dtype) -> dict:
        key = (str(device), dtype)
        if key not in self._device_tables:
            tables = {name: torch.as_tensor(getattr(self, name)).to(device=device, dtype=dtype)
                      for name in self._TABLES}
            tables["timestep_map"] = torch.as_tensor(self.timestep_map, device=device)
            self._device_tables[key] = tables
        return self._device_tables[key]

    def _extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped [N, 1, 1, ...] to broadcast against `like` (its dtype and device)."""
        dtype = like.dtype if like.is_floating_point() else torch.float32
        values = self._tables(like.device, dtype)[name][t]
        return values.view(-1, *([1] * (like.dim() - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Indices of this process -> steps of the original process (what the network was trained on)."""
        return self._tables(t.device, torch.float32)["timestep_map"][t]

    # ---- forward process ----------------------------------------------------------------------
    def q_mean_variance(self, x_start, t):
        """q(x_t | x_0): (mean, variance, log_variance), each like x_start."""
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        var = (1.0 - self._extract("alphas_cumprod", t, x_start)).expand_as(x_start)
        return mean, var, torch.log(var)

    def q_sample(self, x_start, t, noise=None):
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); t = 0 is one step of noise."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """q(x_{t-1} | x_t, x_0): (mean, variance, log_variance_clipped), each like x_t."""
        mean = (self._extract("posterior_mean_coef1", t, x_t) * x_start
                + self._extract("posterior_mean_coef2", t, x_t) * x_t)
        var = self._extract("posterior_variance", t, x_t).expand_as(x_t)
        log_var = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, var, log_var

    # ---- the model's reverse step -------------------------------------------------------------
    def predict_xstart_from_eps(self, x_t, t, eps):
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self._extract("sqrt_recipm1_alphas_cumprod", t, x_t))

    def p_mean_variance(self, model: ModelFn, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None):
        """Run the model once and return p(x_{t-1} | x_t): a dict of
        mean, variance, log_variance, pred_xstart, eps (each like x).

        denoised_fn(pred_xstart) -> pred_xstart is applied before clipping to [-1, 1]
        (inpainting uses it to pin the known region).
        """
        output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.p_mean_variance_from_output(output, x, t, clip_denoised, denoised_fn)

    def p_mean_variance_from_output(self, output, x, t, clip_denoised=True, denoised_fn=None):
        """p_mean_variance for an already computed network output [N, 2C, H, W]."""
        channels = x.shape[1]
        if output.shape[1] != 2 * channels:
            raise ValueError(f"model output has {output.shape[1]} channels; expected {2 * channels} "
                             "(eps and the learned-range variance)")
        eps, var_values = output[:, :channels], output[:, channels:]
        min_log = self._extract("posterior_log_variance_clipped", t, x)
        max_log = self._extract("log_betas", t, x)
        frac = (var_values + 1) / 2  # v in [-1, 1] spans [beta~_t, beta_t]
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    def condition_mean(self, cond_fn: CondFn, out: dict, x, t):
        """Classifier guidance on the mean (Sohl-Dickstein et al.): mean + variance * grad log p(y|x_t)."""
        grad = cond_fn(x, self.model_timesteps(t))
        return out["mean"] + out["variance"] * grad.to(out["mean"].dtype)

    def condition_score(self, cond_fn: CondFn, out: dict, x, t) -> dict:
        """Classifier guidance on the score (Song et al.), for DDIM: eps -= sqrt(1 - abar_t) * grad."""
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - (1 - self._extract("alphas_cumprod", t, x)).sqrt() * cond_fn(x, self.model_timesteps(t))
        out = dict(out)
        out["pred_xstart"] = self.predict_xstart_from_eps(x, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None,
                 model_kwargs=None, noise=None) -> dict:
        """One ancestral (DDPM) step x_t -> x_{t-1}: {"sample", "pred_xstart"}. No noise where t == 0."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t)
        if noise is None:
            noise = torch.randn_like(x)
        nonzero = (t != 0).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None,
                    model_kwargs=None, eta=0.0, noise=None) -> dict:
        """One DDIM step (Song et al. eq. 12) x_t -> x_{t-1}; eta = 0 is deterministic."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = self._extract("alphas_cumprod", t, x)
        abar_prev = self._extract("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        if eta == 0:
            return {"sample": mean, "pred_xstart": out["pred_xstart"]}
        if noise is None:
            noise = torch.randn_like(x)
        nonzero = (t != 0).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return {"sample": mean + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(self, model, x, t, clip_denoised=False, denoised_fn=None, model_kwargs=None) -> dict:
        """The deterministic DDIM ODE run forwards, x_t -> x_{t+1} (encodes an image into noise)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar_next = self._extract("alphas_cumprod_next", t, x)
        sample = out["pred_xstart"] * torch.sqrt(abar_next) + torch.sqrt(1 - abar_next) * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    # ---- training -----------------------------------------------------------------------------
    def vb_terms_bpd(self, output, x_start, x_t, t, clip_denoised=False) -> torch.Tensor:
        """The variational-bound term L_t for a network output, in bits per dimension: [N].

        t == 0: the discretised decoder NLL -log p(x_0 | x_1); otherwise
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)).
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(output, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / LOG2
        nll = -discretized_gaussian_log_likelihood(x_start, means=out["mean"],
                                                   log_scales=0.5 * out["log_variance"])
        nll = mean_flat(nll) / LOG2
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model: ModelFn, x_start, t, model_kwargs=None, noise=None,
                        mse_weights=None) -> dict:
        """Improved DDPM's hybrid loss, per example: {"loss", "mse", "vb"}, each [N].

        mse = ||eps - eps_theta||^2 averaged over pixels (L_simple), times `mse_weights` [N] when
              given (a timestep weighting such as `p2_weights`; "mse" reports it unweighted);
        vb  = L_t in bits with the mean's gradient stopped (only the variance learns from it),
              times num_timesteps / 1000: lambda = 0.001 on L_vlb = T * E_t[L_t]
              (improved-diffusion's RESCALED_MSE);
        loss = mse + vb.
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x_start.shape[1]
        eps = output[:, :channels]
        frozen = torch.cat([eps.detach(), output[:, channels:]], dim=1)
        vb = self.vb_terms_bpd(frozen, x_start, x_t, t) * (self.num_timesteps / 1000.0)
        mse = mean_flat((noise - eps) ** 2)
        weighted = mse if mse_weights is None else mse * mse_weights.to(mse.dtype)
        return {"loss": weighted + vb, "mse": mse, "vb": vb}

    def p2_weights(self, t, gamma: float, k: float = 1.0):
        """P2 weighting (Choi et al. 2022) of L_simple at timesteps t [N]: 1 / (k + SNR(t))^gamma,
        SNR = alpha_bar / (1 - alpha_bar). gamma 0 is uniform; gamma 1 all but drops the nearly
        clean steps (weight ~ 1/SNR) and keeps the noisy ones whole, where layout and colour form."""
        snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        weights = torch.from_numpy(1.0 / (k + snr) ** gamma).float()
        return weights.to(t.device)[t]
