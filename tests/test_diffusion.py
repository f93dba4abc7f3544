"""Diffusion maths against closed forms and float64 references (training/diffusion)."""
import math

import numpy as np
import pytest
import torch

from training.diffusion import GaussianDiffusion, create_diffusion, respaced_diffusion, space_timesteps
from training.diffusion.losses import discretized_gaussian_log_likelihood, normal_kl
from training.diffusion.schedules import cosine_alpha_bar, get_named_beta_schedule
from training.model_config import ModelConfig
from shards import UserError

F64 = torch.float64


def cosine(T=1000):
    return GaussianDiffusion(get_named_beta_schedule("squaredcos_cap_v2", T))


# ---- schedules -----------------------------------------------------------------------------------
def test_cosine_schedule_reproduces_alpha_bar_closed_form():
    T = 1000
    d = cosine(T)
    t = np.arange(T)
    expected = np.array([cosine_alpha_bar((i + 1) / T) / cosine_alpha_bar(0) for i in t])
    # every beta below the 0.999 cap: the cumulative product is the continuous alpha_bar exactly
    uncapped = d.betas < 0.999
    assert uncapped[:-1].all()
    np.testing.assert_allclose(d.alphas_cumprod[uncapped], expected[uncapped], rtol=1e-9)
    assert d.betas.max() <= 0.999 and (np.diff(d.betas) > 0).all()


def test_linear_schedule_endpoints_scale_with_step_count():
    b = get_named_beta_schedule("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    b100 = get_named_beta_schedule("linear", 100)
    assert b100[0] == pytest.approx(1e-3) and b100[-1] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_named_beta_schedule("quadratic", 10)


# ---- forward process and posterior ---------------------------------------------------------------
def test_q_sample_is_the_closed_form_and_has_the_right_moments():
    d = cosine()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7, dtype=F64)
    t = torch.full((20000,), 300)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    xt = d.q_sample(x0, t, noise)
    abar = d.alphas_cumprod[300]
    assert torch.allclose(xt, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise, atol=1e-12)
    assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - abar, rel=0.03)
    mean, var, log_var = d.q_mean_variance(x0[:2], t[:2])
    assert torch.allclose(var, torch.full_like(var, 1 - abar)) and torch.allclose(log_var, var.log())


def test_posterior_matches_bayes_rule_in_float64():
    d = cosine(50)
    g = torch.Generator().manual_seed(1)
    t = torch.arange(1, 50)
    x0 = torch.randn(49, 3, 2, 2, generator=g, dtype=F64)
    xt = torch.randn(49, 3, 2, 2, generator=g, dtype=F64)
    mean, var, _ = d.q_posterior_mean_variance(x0, xt, t)
    # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})
    a = torch.tensor(1 - d.betas, dtype=F64)[t].view(-1, 1, 1, 1)
    b = torch.tensor(d.betas, dtype=F64)[t].view(-1, 1, 1, 1)
    abar_prev = torch.tensor(d.alphas_cumprod, dtype=F64)[t - 1].view(-1, 1, 1, 1)
    precision = a / b + 1 / (1 - abar_prev)
    bayes_var = 1 / precision
    bayes_mean = bayes_var * (a.sqrt() * xt / b + abar_prev.sqrt() * x0 / (1 - abar_prev))
    assert torch.allclose(var, bayes_var.expand_as(var), rtol=1e-10)
    assert torch.allclose(mean, bayes_mean, rtol=1e-9, atol=1e-12)


# ---- likelihood terms ----------------------------------------------------------------------------
def test_normal_kl_is_zero_for_identical_gaussians_and_matches_torch_distributions():
    m = torch.tensor([0.3, -1.0], dtype=F64)
    lv = torch.tensor([-2.0, 0.5], dtype=F64)
    assert torch.allclose(normal_kl(m, lv, m, lv), torch.zeros(2, dtype=F64))
    p = torch.distributions.Normal(m, (0.5 * lv).exp())
    q = torch.distributions.Normal(m + 0.4, (0.5 * (lv - 1)).exp())
    ref = torch.distributions.kl_divergence(p, q)
    assert torch.allclose(normal_kl(m, lv, m + 0.4, lv - 1), ref, rtol=1e-12)


def test_discretized_gaussian_log_likelihood_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=F64) / 127.5 - 1
    means = torch.full_like(levels, 0.1)
    log_scales = torch.full_like(levels, math.log(0.2))
    logp = discretized_gaussian_log_likelihood(levels, means=means, log_scales=log_scales)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)  # bins tile the real line
    # interior bins agree with the exact normal CDF up to the tanh approximation's error
    normal = torch.distributions.Normal(0.1, 0.2)
    exact = normal.cdf(levels[1:-1] + 1 / 255) - normal.cdf(levels[1:-1] - 1 / 255)
    assert torch.allclose(logp[1:-1].exp(), exact, atol=2e-4)


# ---- p(x_{t-1} | x_t) with the learned-range variance --------------------------------------------
def test_learned_range_variance_interpolates_log_variance_between_posterior_and_beta():
    d = cosine(100)
    t = torch.tensor([1, 10, 60, 99])
    x = torch.randn(4, 3, 2, 2, dtype=F64)
    eps = torch.randn_like(x)
    for v, expected in ((-1.0, d.posterior_log_variance_clipped), (1.0, np.log(d.betas)),
                        (0.0, 0.5 * (d.posterior_log_variance_clipped + np.log(d.betas)))):
        out = d.p_mean_variance_from_output(torch.cat([eps, torch.full_like(x, v)], 1), x, t, clip_denoised=False)
        ref = torch.tensor(expected, dtype=F64)[t].view(-1, 1, 1, 1).expand_as(x)
        assert torch.allclose(out["log_variance"], ref, rtol=1e-12)
        assert torch.allclose(out["variance"], ref.exp(), rtol=1e-12)


def test_true_noise_gives_back_x0_and_the_true_posterior_mean():
    d = cosine(100)
    t = torch.tensor([0, 5, 50, 99])
    x0 = torch.rand(4, 3, 4, 4, dtype=F64) * 2 - 1
    noise = torch.randn_like(x0)
    xt = d.q_sample(x0, t, noise)

    def oracle(x, ts):
        return torch.cat([noise, torch.zeros_like(x)], 1)

    out = d.p_mean_variance(oracle, xt, t, clip_denoised=False)
    assert torch.allclose(out["pred_xstart"], x0, atol=1e-9)
    true_mean, _, _ = d.q_posterior_mean_variance(x0, xt, t)
    assert torch.allclose(out["mean"], true_mean, atol=1e-9)


# ---- hybrid loss ---------------------------------------------------------------------------------
class EpsAndVar(torch.nn.Module):
    """Stand-in network with one learnable eps offset and one learnable variance value."""

    def __init__(self, noise):
        super().__init__()
        self.noise = noise
        self.eps_offset = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.v = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))

    def forward(self, x, t):
        return torch.cat([self.noise + self.eps_offset, self.v.expand_as(x)], 1)


def test_training_losses_hybrid_definition_and_stop_gradient():
    d = cosine(1000)
    g = torch.Generator().manual_seed(3)
    x0 = (torch.randint(0, 256, (6, 3, 4, 4), generator=g).to(F64) / 127.5) - 1
    t = torch.tensor([0, 1, 10, 400, 800, 999])
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    model = EpsAndVar(noise)
    terms = d.training_losses(model, x0, t, noise=noise)
    assert set(terms) >= {"loss", "mse", "vb"} and all(v.shape == (6,) for v in terms.values())
    assert torch.allclose(terms["mse"], torch.full((6,), 0.09, dtype=F64))
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    # vb = L_t in bits (KL for t > 0, decoder NLL at t = 0), times T / 1000
    xt = d.q_sample(x0, t, noise)
    out = d.p_mean_variance_from_output(model(xt, t).detach(), xt, t, clip_denoised=False)
    true_mean, _, true_lv = d.q_posterior_mean_variance(x0, xt, t)
    kl = normal_kl(true_mean, true_lv, out["mean"], out["log_variance"]).mean((1, 2, 3)) / math.log(2)
    nll = -discretized_gaussian_log_likelihood(x0, means=out["mean"], log_scales=0.5 * out["log_variance"])
    nll = nll.mean((1, 2, 3)) / math.log(2)
    assert torch.allclose(terms["vb"][1:], kl[1:], rtol=1e-10)
    assert torch.allclose(terms["vb"][:1], nll[:1], rtol=1e-10)
    # the vb term trains the variance only: its gradient does not reach the eps output
    terms["vb"].sum().backward()
    assert model.eps_offset.grad is None or model.eps_offset.grad == 0
    assert model.v.grad is not None and model.v.grad != 0
    # and the rescaling follows the process length (lambda = 0.001 on T * L_t)
    d100 = cosine(100)
    t100 = torch.tensor([50])
    a = d100.training_losses(EpsAndVar(noise[:1]), x0[:1], t100, noise=noise[:1])["vb"]
    ref = d100.vb_terms_bpd(EpsAndVar(noise[:1])(d100.q_sample(x0[:1], t100, noise[:1]), t100).detach(),
                            x0[:1], d100.q_sample(x0[:1], t100, noise[:1]), t100)
    assert torch.allclose(a, ref * 0.1)


def test_p2_weighting_closed_form_and_weighted_hybrid_loss():
    d = cosine(1000)
    t = torch.tensor([0, 100, 500, 900, 999])
    ab = d.alphas_cumprod[t.numpy()]
    snr = ab / (1 - ab)
    # P2: 1 / (k + SNR)^gamma; gamma 0 is uniform
    np.testing.assert_allclose(d.p2_weights(t, 1.0, 1.0).numpy(), 1 / (1 + snr), rtol=1e-6)
    np.testing.assert_allclose(d.p2_weights(t, 0.5, 2.0).numpy(), 1 / (2 + snr) ** 0.5, rtol=1e-6)
    assert torch.equal(d.p2_weights(t, 0.0), torch.ones(5))
    w = d.p2_weights(t, 1.0)
    assert w[0] < 1e-3 and w[-1] > 0.999 and (w[1:] >= w[:-1]).all()  # noisy steps keep full weight
    # the weights scale L_simple only; "mse" stays the unweighted L_simple for the logs
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand((5, 3, 4, 4), generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    plain = d.training_losses(EpsAndVar(noise), x0, t, noise=noise)
    weighted = d.training_losses(EpsAndVar(noise), x0, t, noise=noise, mse_weights=w)
    assert torch.allclose(weighted["mse"], plain["mse"]) and torch.allclose(weighted["vb"], plain["vb"])
    assert torch.allclose(weighted["loss"], w.to(F64) * plain["mse"] + plain["vb"])


# ---- respacing -----------------------------------------------------------------------------------
def test_space_timesteps_section_counts_fast27_and_ddim():
    assert len(space_timesteps(1000, "250")) == 250
    steps = space_timesteps(1000, "10,10,3,2,2")
    assert len(steps) == 27 and 0 in steps and 999 in steps
    fast = space_timesteps(1000, "fast27")
    assert len(fast) == 27 and 999 not in fast and 997 in fast and fast - {997} == steps - {999}
    # first section (0..199): 10 steps at stride 199/9, rounded
    assert sorted(steps)[:10] == [round(i * 199 / 9) for i in range(10)]
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(10, "") == set(range(10))
    for bad in ("ddim7x", "1,2,x", "2000"):
        with pytest.raises(ValueError):
            space_timesteps(1000, bad)


@pytest.mark.parametrize("spec", ["10", "fast27", "ddim25", "7,3"])
def test_respaced_betas_reproduce_alphas_cumprod_at_kept_steps(spec):
    betas = get_named_beta_schedule("squaredcos_cap_v2", 1000)
    base = GaussianDiffusion(betas)
    keep = sorted(space_timesteps(1000, spec))
    d = respaced_diffusion(betas, keep)
    assert d.num_timesteps == len(keep)
    np.testing.assert_allclose(d.alphas_cumprod, base.alphas_cumprod[keep], rtol=1e-8)  # 1 - tiny ratio at T-1
    assert list(d.timestep_map) == keep
    seen = []
    d.p_mean_variance(lambda x, ts: (seen.append(ts), torch.zeros(2, 6, 1, 1))[1],
                      torch.zeros(2, 3, 1, 1), torch.tensor([0, d.num_timesteps - 1]))
    assert seen[0].tolist() == [keep[0], keep[-1]]  # the model sees original steps


def test_create_diffusion_from_model_config():
    cfg = ModelConfig(diffusion_steps=1000, noise_schedule="linear", timestep_respacing="100")
    assert create_diffusion(cfg).num_timesteps == 100
    assert create_diffusion(cfg, "fast27").num_timesteps == 27
    assert create_diffusion(cfg, "").num_timesteps == 1000
    with pytest.raises(UserError, match="diffusion settings"):
        create_diffusion(cfg, "3000")
