"""Samplers, guidance, editing and upsampling (training/sampling) against analytic models.

The "analytic" model is the exact eps-predictor for Gaussian data x_0 ~ N(MU, S^2): with it the
samplers must reproduce the data distribution, so these tests check the sampling maths, not shapes.
"""
import copy
import math

import pytest
import torch

from conftest import randomized
from training.diffusion import GaussianDiffusion, respaced_diffusion, space_timesteps
from training.diffusion.schedules import get_named_beta_schedule
from training.sampling.clip_cond import clip_cond_fn
from training.sampling.editing import inpaint, inpaint_model_kwargs, sdedit, sdedit_start_step
from training.sampling.guidance import ClassifierFreeGuidance, TextConditioned, encode_prompts, text_model_fn
from training.sampling.samplers import ddim_encode, sample_loop
from training.sampling.upsample import downsample, low_res_consistency, quantize_8bit, upsample

MU, S = 0.3, 0.5
BETAS = get_named_beta_schedule("squaredcos_cap_v2", 1000)
BASE = GaussianDiffusion(BETAS)




def spaced(spec):
    return respaced_diffusion(BETAS, space_timesteps(1000, spec))


class GaussianDataEps(torch.nn.Module):
    """E[eps | x_t] for x_0 ~ N(MU, S^2) under the 1000-step cosine process; v = 0."""

    def forward(self, x, t, **kwargs):
        abar = torch.as_tensor(BASE.alphas_cumprod, dtype=x.dtype)[t].view(-1, 1, 1, 1)
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * S ** 2 + 1 - abar)
        return torch.cat([eps, torch.zeros_like(x)], 1)


def test_ddpm_samples_follow_the_data_distribution():
    g = torch.Generator().manual_seed(0)
    x = sample_loop(spaced("50"), GaussianDataEps(), (1500, 3, 1, 1), generator=g, clip_denoised=False)
    assert x.mean().item() == pytest.approx(MU, abs=0.03)
    assert x.std().item() == pytest.approx(S, rel=0.08)


def test_ddim_eta0_is_deterministic_matches_the_data_and_inverts():
    d = spaced("ddim50")
    noise = torch.randn(1500, 3, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = sample_loop(d, GaussianDataEps(), noise.shape, noise=noise, method="ddim", clip_denoised=False)
    b = sample_loop(d, GaussianDataEps(), noise.shape, noise=noise, method="ddim", clip_denoised=False,
                    generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)  # no randomness at eta = 0
    assert a.mean().item() == pytest.approx(MU, abs=0.03) and a.std().item() == pytest.approx(S, rel=0.05)
    # the ODE runs back to the starting noise, up to a first-order discretisation error
    for spec, tol in (("ddim50", 0.1), ("ddim250", 0.02)):
        dd = spaced(spec)
        x0 = sample_loop(dd, GaussianDataEps(), (16, 3, 1, 1), noise=noise[:16], method="ddim", clip_denoised=False)
        latent = ddim_encode(dd, GaussianDataEps(), x0)
        assert (latent - noise[:16]).abs().max() < tol * noise[:16].abs().max()


def test_seeded_sampling_is_reproducible_and_eta_adds_noise():
    d = spaced("10")

    def run(seed, **kw):
        return sample_loop(d, GaussianDataEps(), (4, 3, 2, 2), generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))
    assert torch.equal(run(5, method="ddim", eta=1.0), run(5, method="ddim", eta=1.0))
    assert not torch.equal(run(5, method="ddim", eta=1.0), run(5, method="ddim", eta=0.0))
    with pytest.raises(ValueError, match="unknown sampling method"):
        run(5, method="euler")


# ---- text conditioning and classifier-free guidance ----------------------------------------------
class CharTokenizer:
    def encode(self, text):
        return [1 + ord(c) % 40 for c in text]

    def padded_tokens_and_mask(self, tokens, ctx):
        tokens = tokens[:ctx]
        return tokens + [0] * (ctx - len(tokens)), [True] * len(tokens) + [False] * (ctx - len(tokens))


class TinyTextModel(torch.nn.Module):
    """Stand-in with the network's interface; records calls so tests can count forwards."""
    text_ctx, image_size = 8, 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(41, 6)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.encode_calls, self.forward_batches, self.kwargs_seen = 0, [], []

    def encode_text(self, tokens, mask):
        self.encode_calls += 1
        return {"xf_proj": (self.embed(tokens) * mask[..., None]).sum(1)}

    def forward(self, x, t, tokens=None, mask=None, *, text_emb=None, **image_kwargs):
        self.forward_batches.append(x.shape[0])
        self.kwargs_seen.append(image_kwargs)
        if text_emb is None:
            text_emb = self.encode_text(tokens, mask)
        return torch.tanh(self.conv(x) + text_emb["xf_proj"][:, :, None, None] + t.view(-1, 1, 1, 1) / 1000)


def test_classifier_free_guidance_is_one_batched_forward_on_eps_only():
    model, tok = TinyTextModel(), CharTokenizer()
    prompts = ["a red square", "a blue circle"]
    model_fn = text_model_fn(model, tok, prompts, 3.0)
    assert isinstance(model_fn, ClassifierFreeGuidance) and model.encode_calls == 1
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        out = model_fn(x, t)
        assert model.forward_batches == [4]  # both halves in one forward
        cond = model(x, t, text_emb=encode_prompts(model, tok, prompts, with_empty=False))
        uncond = model(x, t, text_emb=encode_prompts(model, tok, ["", ""], with_empty=False))
    assert torch.allclose(out[:, :3], uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]), atol=1e-6)
    assert torch.allclose(out[:, 3:], cond[:, 3:], atol=1e-6)  # variance of the conditional half
    # the same rows in smaller network calls (memory / CPU-cache bound) give the same result
    chunked = text_model_fn(model, tok, prompts, 3.0, forward_batch=3)
    model.forward_batches.clear()
    with torch.no_grad():
        assert torch.allclose(chunked(x, t), out, atol=1e-6)
    assert model.forward_batches == [3, 1]
    # scale 1 (or None) is plain conditional sampling with no empty-caption half
    plain = text_model_fn(model, tok, prompts, 1.0)
    assert isinstance(plain, TextConditioned)


def test_guided_sampling_encodes_text_once_per_run():
    model, tok = TinyTextModel(), CharTokenizer()
    from training.sampling.text2im import sample_text2im
    images = sample_text2im(model, spaced("5"), tok, ["a", "b", "c"], guidance_scale=2.0,
                            generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 8, 8) and images.abs().max() <= 1
    assert model.encode_calls == 1 and model.forward_batches == [6] * 5


# ---- CLIP guidance -------------------------------------------------------------------------------
class LinearClip(torch.nn.Module):
    """A noised-CLIP stand-in: image embedding = the pixels, text embedding = a fixed direction, so
    the CLIP logit is <x, direction> and its gradient is the direction itself."""

    def __init__(self, direction):
        super().__init__()
        self.direction = torch.nn.Parameter(torch.as_tensor(direction, dtype=torch.float32)[None])

    def encode_text(self, tokens, mask):
        return self.direction

    def encode_image(self, x, t):
        return x.flatten(1)

    def logit_scale_value(self):
        return torch.tensor(2.0)


def test_clip_cond_fn_is_the_logit_gradient_and_steers_both_samplers_towards_the_caption():
    clip = LinearClip([-1.0, -1.0, -1.0])
    tokens, mask = torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool)
    x = torch.randn(4, 3, 1, 1)
    grad = clip_cond_fn(clip, tokens, mask, guidance_scale=1.5)(x, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(grad, torch.full_like(x, 1.5 * 2.0 * -1.0))  # scale * logit scale * direction
    d = spaced("25")
    for method in ("ddpm", "ddim"):
        g = torch.Generator().manual_seed(2)
        free = sample_loop(d, GaussianDataEps(), (400, 3, 1, 1), method=method, generator=g, clip_denoised=False)
        g = torch.Generator().manual_seed(2)
        guided = sample_loop(d, GaussianDataEps(), (400, 3, 1, 1), method=method, generator=g,
                             clip_denoised=False, cond_fn=clip_cond_fn(clip, tokens, mask, guidance_scale=2.5))
        assert guided.mean() < free.mean() - 0.1  # pulled along the caption's direction


# ---- editing -------------------------------------------------------------------------------------
def test_inpainting_keeps_the_known_region_exactly_in_both_modes():
    model, tok = TinyTextModel(), CharTokenizer()
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    keep = torch.ones(2, 1, 8, 8)
    keep[:, :, 4:] = 0  # regenerate the bottom half
    d = spaced("6")
    kw = inpaint_model_kwargs(image, keep)
    model_fn = text_model_fn(model, tok, ["x", "y"], 3.0, **kw)
    out = inpaint(d, model_fn, image, keep, mode="finetuned", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, :4], image[:, :, :4], atol=1e-6)
    assert not torch.allclose(out[:, :, 4:], image[:, :, 4:], atol=0.05)
    seen = model.kwargs_seen[-1]
    assert seen["inpaint_image"].shape[0] == 4 and torch.equal(seen["inpaint_mask"][:2], keep)
    plain_fn = text_model_fn(model, tok, ["x", "y"], 3.0)
    out = inpaint(d, plain_fn, image, keep, mode="replace", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, :4], image[:, :, :4])
    assert not torch.allclose(out[:, :, 4:], image[:, :, 4:], atol=0.05)
    with pytest.raises(ValueError, match="inpainting mode"):
        inpaint(d, plain_fn, image, keep, mode="blend")


def test_replace_mode_feeds_the_model_the_noised_original_in_the_known_region():
    d = spaced("4")
    image = torch.full((1, 3, 2, 2), 0.8, dtype=torch.float64)
    keep = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64).view(1, 1, 2, 2)
    seen = []

    def model(x, t):
        seen.append(x.clone())
        return torch.zeros(1, 6, 2, 2, dtype=x.dtype)

    inpaint(d, model, image, keep, mode="replace", generator=torch.Generator().manual_seed(0))
    # x at each step: known pixels ~ q(x_t | image), with mean sqrt(abar_t) * 0.8
    for i, x in zip(range(3, -1, -1), seen):
        abar = d.alphas_cumprod[i]
        dev = (x[0, :, :, 0] - math.sqrt(abar) * 0.8).abs().max().item()
        assert dev <= 4 * math.sqrt(1 - abar) + 1e-9


def test_sdedit_start_step_and_strength():
    d = spaced("100")
    assert sdedit_start_step(d, strength=1.0) == 99
    assert sdedit_start_step(d, strength=0.5) == 49
    assert sdedit_start_step(d, t_start=999) == 99 and sdedit_start_step(d, t_start=0) == 0
    kept = d.timestep_map
    assert kept[sdedit_start_step(d, t_start=505)] <= 505 < kept[sdedit_start_step(d, t_start=505) + 1]
    with pytest.raises(ValueError):
        sdedit_start_step(d, strength=0.0)
    with pytest.raises(ValueError):
        sdedit_start_step(d, strength=0.5, t_start=10)

    calls = []

    def model(x, t):
        calls.append(t[0].item())
        return GaussianDataEps()(x, t)

    sketch = torch.full((64, 3, 2, 2), 0.9)
    light = sdedit(d, model, sketch, start_step=sdedit_start_step(d, strength=0.1),
                   generator=torch.Generator().manual_seed(0))
    assert len(calls) == 10 and calls[0] == kept[9]  # starts part-way, at the original step
    heavy = sdedit(d, model, sketch, start_step=99, generator=torch.Generator().manual_seed(0))
    # a light edit stays near the sketch; a full one forgets it (mean -> the data mean)
    assert light.mean().item() > 0.75
    assert heavy.mean().item() == pytest.approx(MU, abs=0.1)


# ---- upsampling ----------------------------------------------------------------------------------
def test_upsampling_uses_fast27_temperature_and_quantised_low_res():
    model, tok = TinyTextModel(), CharTokenizer()
    d = spaced("fast27")
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    first_x = []

    orig_forward = model.forward

    def recording_forward(x, t, **kw):
        first_x.append(x.clone())
        return orig_forward(x, t, **kw)

    model.forward = recording_forward
    out = upsample(model, d, tok, ["a", "b"], low, temperature=0.5, generator=torch.Generator().manual_seed(4))
    assert out.shape == (2, 3, 8, 8) and len(first_x) == 27 and model.encode_calls == 1
    expected_noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 0.5
    assert torch.equal(first_x[0], expected_noise)
    low_seen = model.kwargs_seen[0]["low_res"]
    assert torch.equal(low_seen, quantize_8bit(low))
    assert torch.allclose((low_seen + 1) * 127.5, ((low_seen + 1) * 127.5).round(), atol=1e-4)


class ColourBlindUpsampler(GaussianDataEps):
    """An upsampler that ignores its low_res input: it draws every pixel from N(MU, S^2), whatever the
    base image's colours (as the demo's briefly trained upsampler turned white backgrounds lavender)."""
    text_ctx, image_size = 8, 16

    def encode_text(self, tokens, mask):
        return {}

    def forward(self, x, t, tokens=None, mask=None, *, text_emb=None, low_res=None):
        assert low_res is not None
        return super().forward(x, t)


def test_low_res_consistency_keeps_the_base_images_colours_and_the_upsamplers_detail():
    low = torch.full((6, 3, 4, 4), -0.6)
    low[:, 0, :2] = 0.8  # a red band on top: layout as well as colour
    run = lambda **kw: upsample(ColourBlindUpsampler(), spaced("50"), CharTokenizer(), ["x"] * 6, low,
                                generator=torch.Generator().manual_seed(0), **kw)
    drifted, held = run(), run(denoised_fn=low_res_consistency(quantize_8bit(low)))
    assert (downsample(drifted, 4) - low).abs().mean() > 0.5        # its own colours (MU) instead
    assert (downsample(held, 4) - low).abs().mean() < 0.05          # the base image's colours and band
    # what the upsampler adds above the low-res band (its per-pixel detail) is still there
    detail = held - torch.nn.functional.interpolate(downsample(held, 4), size=(16, 16), mode="bilinear")
    assert detail.std() > 0.5 * S


# ---- the real (tiny) network ---------------------------------------------------------------------
def test_guidance_with_the_real_network_equals_two_separate_forwards_with_tokens():
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.sampling.guidance import tokenize_prompts

    torch.manual_seed(0)
    model = randomized(create_model(load_model_config("tiny"), device="cpu").eval())
    tok, prompts = CharTokenizer(), ["a red cube", "two blue balls"]
    nchw = copy.deepcopy(model)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
    with torch.inference_mode():
        guided = text_model_fn(model, tok, prompts, 2.5)(x, t)
        assert guided.abs().mean() > 0.01  # trained-like weights: a real comparison, not zeros
        cond = nchw(x, t, *tokenize_prompts(tok, prompts, model.text_ctx))
        uncond = nchw(x, t, *tokenize_prompts(tok, ["", ""], model.text_ctx))
    # the sampler runs the network channels-last (NHWC); the reference is the model as built
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in nchw.parameters() if p.dim() == 4)
    assert torch.allclose(guided[:, :3], uncond[:, :3] + 2.5 * (cond[:, :3] - uncond[:, :3]), atol=1e-4)
    assert torch.allclose(guided[:, 3:], cond[:, 3:], atol=1e-5)


def test_encoding_runs_the_empty_caption_once_and_caches_the_attention_text_projections():
    from training.factory import create_model
    from training.model_config import load_model_config

    model = randomized(create_model(load_model_config("tiny"), device="cpu").eval())
    tok, prompts = CharTokenizer(), ["a red cube", "two blue balls", "a cat"]
    both = encode_prompts(model, tok, prompts, with_empty=True)
    cond = encode_prompts(model, tok, prompts, with_empty=False)
    empty = encode_prompts(model, tok, [""] * 3, with_empty=False)
    n_attn = len(model.attention_blocks())
    assert n_attn > 1 and len(both["encoder_kv"]) == n_attn
    for key in ("xf_proj", "xf_out"):
        assert both[key].shape[0] == 6
        torch.testing.assert_close(both[key], torch.cat([cond[key], empty[key]]))
    for kv, kv_cond, kv_empty in zip(both["encoder_kv"], cond["encoder_kv"], empty["encoder_kv"]):
        torch.testing.assert_close(kv, torch.cat([kv_cond, kv_empty]))


def test_guided_sampling_with_the_real_network_equals_a_plain_per_step_loop():
    """What `glide sample` runs (text encoded once, cached attention keys/values, one batched forward)
    gives the images of the naive loop: re-encode both captions and run two forwards every step."""
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.sampling.guidance import tokenize_prompts
    from training.sampling.text2im import sample_text2im

    model = randomized(create_model(load_model_config("tiny"), device="cpu").eval(), seed=3)
    tok, prompts, scale, d = CharTokenizer(), ["a red cube", "two blue balls"], 3.0, spaced("4")
    ours = sample_text2im(model, d, tok, prompts, guidance_scale=scale, generator=torch.Generator().manual_seed(7))
    cond_tokens = tokenize_prompts(tok, prompts, model.text_ctx)
    empty_tokens = tokenize_prompts(tok, ["", ""], model.text_ctx)

    def guided(x, t):
        cond, uncond = model(x, t, *cond_tokens), model(x, t, *empty_tokens)
        return torch.cat([uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3]), cond[:, 3:]], dim=1)

    plain = sample_loop(d, guided, (2, 3, 32, 32), generator=torch.Generator().manual_seed(7))
    assert ours.std() > 0.1
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-4)


def test_guided_rows_run_in_one_call_unless_cpu_activations_would_page_fault():
    from training.factory import create_model
    from training.model_config import load_model_config
    from training.sampling.guidance import auto_forward_batch

    tiny = create_model(load_model_config("tiny"), device="meta")
    base = create_model(load_model_config("glide-filtered-base"), device="meta")  # shapes only
    assert auto_forward_batch(tiny, torch.empty(8, 3, 32, 32)) == 8
    # 64x64 base: a full-resolution skip concat is 384 x 64 x 64 floats = 6.3 MB per row
    assert auto_forward_batch(base, torch.empty(8, 3, 64, 64)) == 4
    assert auto_forward_batch(base, torch.empty(2, 3, 64, 64)) == 2
    assert auto_forward_batch(base, torch.empty(8, 3, 64, 64, device="meta")) == 8  # not CPU: one call
    assert auto_forward_batch(TinyTextModel(), torch.empty(8, 3, 8, 8)) == 8  # not a UNet: one call
