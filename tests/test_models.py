"""GLIDE networks: released sizes, the four variants, text conditioning semantics, glide's maths."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import randomized
from shards import UserError
from training.factory import create_model
from training.inpaint_convert import to_inpaint
from training.model_config import load_model_config

RELEASED = {
    "glide-filtered-base": 385_030_726,
    "glide-filtered-upsampler": 398_361_286,
    "glide-filtered-base-inpaint": 385_037_638,
    "glide-filtered-upsampler-inpaint": 398_368_198,
}




def n_params(model):
    return sum(p.numel() for p in model.parameters())


def tiny(kind="base", **changes):
    cfg = load_model_config("tiny")
    return cfg.replace(kind=kind, inpaint=None, super_res=None, **changes)


def text_inputs(cfg, batch=2, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, cfg.n_vocab, (batch, cfg.text_ctx), generator=g)
    mask = torch.zeros(batch, cfg.text_ctx, dtype=torch.bool)
    mask[:, :length] = True
    tokens[~mask] = 0
    return tokens, mask


def variant_kwargs(cfg, batch=2, size=32, seed=2):
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if cfg.super_res:
        kw["low_res"] = torch.randn(batch, 3, size // 4, size // 4, generator=g)
    if cfg.inpaint:
        kw["inpaint_image"] = torch.randn(batch, 3, size, size, generator=g)
        kw["inpaint_mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return kw


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configs_have_exact_released_parameter_counts(name):
    model = create_model(load_model_config(name), device="meta")
    assert n_params(model) == RELEASED[name]
    assert all(p.device.type == "meta" for p in model.parameters())


def test_paper_models_have_the_papers_sizes():
    base = create_model(load_model_config("glide-paper-base"), device="meta")
    text = sum(p.numel() for k, p in base.named_parameters() if k.startswith("transformer."))
    assert 3.4e9 < n_params(base) < 3.6e9  # "3.5 billion"
    assert 1.15e9 < text < 1.25e9  # "1.2B" text transformer
    assert 2.2e9 < n_params(base) - text - base.token_embedding.weight.numel() < 2.4e9  # "2.3B" visual
    up = create_model(load_model_config("glide-paper-upsampler"), device="meta")
    assert 1.45e9 < n_params(up) < 1.55e9  # "1.5 billion"
    assert up.model_channels == 384 and up.xf_width == 1024


def test_state_dict_uses_glide_text2im_key_names_and_layouts():
    cfg = load_model_config("glide-filtered-upsampler-inpaint")
    sd = create_model(cfg, device="meta").state_dict()
    expect = {
        "time_embed.0.weight": (768, 192), "time_embed.2.weight": (768, 768),
        "input_blocks.0.0.weight": (192, 10, 3, 3),
        "input_blocks.1.0.in_layers.0.weight": (192,), "input_blocks.1.0.in_layers.2.weight": (192, 192, 3, 3),
        "input_blocks.1.0.emb_layers.1.weight": (384, 768), "input_blocks.1.0.out_layers.3.weight": (192, 192, 3, 3),
        "middle_block.1.qkv.weight": (2304, 768, 1), "middle_block.1.encoder_kv.weight": (1536, 512, 1),
        "middle_block.1.proj_out.weight": (768, 768, 1), "middle_block.1.norm.weight": (768,),
        "out.0.weight": (192,), "out.2.weight": (6, 192, 3, 3),
        "transformer.resblocks.15.attn.c_qkv.weight": (1536, 512), "transformer.resblocks.0.mlp.c_fc.weight": (2048, 512),
        "transformer.resblocks.0.ln_1.weight": (512,), "final_ln.weight": (512,),
        "token_embedding.weight": (50257, 512), "positional_embedding": (128, 512),
        "padding_embedding": (128, 512), "transformer_proj.weight": (768, 512),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    # resblock down-sampling (no conv) and a channel-changing skip connection
    assert "input_blocks.3.0.skip_connection.weight" not in sd
    assert any(k.endswith("skip_connection.weight") for k in sd)


@pytest.mark.parametrize("kind,in_ch", [("base", 3), ("upsampler", 6), ("base-inpaint", 7), ("upsampler-inpaint", 10)])
def test_forward_shapes_for_all_four_variants(kind, in_ch):
    cfg = tiny(kind)
    model = create_model(cfg, device="cpu")
    assert (model.in_channels, model.conv_in_channels, model.image_size, model.text_ctx) == (3, in_ch, 32, 16)
    tokens, mask = text_inputs(cfg)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([0, 999]), tokens, mask, **variant_kwargs(cfg))
    assert out.shape == (2, 6, 32, 32) and torch.isfinite(out).all()


def test_upsampler_requires_low_res_and_base_rejects_it():
    cfg = tiny("upsampler")
    tokens, mask = text_inputs(cfg)
    with pytest.raises(ValueError, match="low_res"):
        create_model(cfg, "cpu")(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), tokens, mask)
    with pytest.raises(ValueError, match="low_res"):
        create_model(tiny(), "cpu")(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), tokens, mask,
                                    low_res=torch.randn(2, 3, 8, 8))


@torch.no_grad()
def test_text_emb_path_equals_tokens_path():
    cfg = tiny("upsampler")
    model = randomized(create_model(cfg, "cpu")).eval()
    tokens, mask = text_inputs(cfg)
    x, t, kw = torch.randn(2, 3, 32, 32), torch.tensor([10, 700]), variant_kwargs(cfg)
    emb = model.encode_text(tokens, mask)
    assert emb["xf_proj"].shape == (2, 4 * cfg.num_channels) and emb["xf_out"].shape == (2, 32, 16)
    torch.testing.assert_close(model(x, t, text_emb=emb, **kw), model(x, t, tokens, mask, **kw))


@torch.no_grad()
def test_masked_out_tokens_do_not_change_the_output_but_real_ones_do():
    cfg = tiny()
    model = randomized(create_model(cfg, "cpu")).eval()
    tokens, mask = text_inputs(cfg, length=5)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 500])
    ref = model(x, t, tokens, mask)
    padded_changed = tokens.clone()
    padded_changed[:, 10] = 1234
    torch.testing.assert_close(model(x, t, padded_changed, mask), ref, rtol=0, atol=0)
    real_changed = tokens.clone()
    real_changed[:, 2] = (real_changed[:, 2] + 1) % cfg.n_vocab
    assert (model(x, t, real_changed, mask) - ref).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["base", "upsampler"])
@torch.no_grad()
def test_inpaint_conversion_zero_inits_new_channels_and_keeps_outputs(kind):
    cfg = tiny(kind)
    model = randomized(create_model(cfg, "cpu")).eval()
    inpaint, icfg = to_inpaint(model, cfg)
    inpaint.eval()
    assert icfg.kind == f"{kind}-inpaint" and icfg.inpaint and inpaint.conv_in_channels == cfg.in_channels + 4
    w = inpaint.state_dict()["input_blocks.0.0.weight"]
    assert (w[:, 3:7] == 0).all() and (w[:, :3] != 0).any()
    tokens, mask = text_inputs(cfg)
    x, t, kw = torch.randn(2, 3, 32, 32), torch.tensor([5, 900]), variant_kwargs(cfg)
    ikw = variant_kwargs(icfg, seed=7)
    ikw.pop("low_res", None)
    torch.testing.assert_close(inpaint(x, t, tokens, mask, **kw, **ikw), model(x, t, tokens, mask, **kw))
    # from a state dict too
    inpaint2, _ = to_inpaint(model.state_dict(), cfg)
    torch.testing.assert_close(inpaint2.state_dict()["input_blocks.0.0.weight"], w)


def test_inpaint_conversion_rejects_inpaint_and_mismatched_inputs():
    cfg = tiny("base-inpaint")
    with pytest.raises(UserError, match="only 'base' and 'upsampler'"):
        to_inpaint(create_model(cfg, "meta"), cfg)
    with pytest.raises(UserError, match="input channels"):
        to_inpaint(create_model(tiny("upsampler"), "meta").state_dict(), tiny("base"))


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = tiny("base-inpaint")
    tokens, mask = text_inputs(cfg)
    x, t, kw = torch.randn(2, 3, 32, 32), torch.tensor([4, 321]), variant_kwargs(cfg)
    grads, block_runs = [], []
    for use_checkpoint in (False, True):
        model = randomized(create_model(cfg.replace(use_checkpoint=use_checkpoint), "cpu"))
        runs = []
        model.middle_block.register_forward_pre_hook(lambda *_: runs.append(1))
        model.transformer.resblocks[0].register_forward_pre_hook(lambda *_: runs.append(1))
        model(x, t, tokens, mask, **kw).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        block_runs.append(len(runs))
    assert block_runs == [2, 4]  # checkpointed blocks are recomputed in the backward pass
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], msg=k)


@torch.no_grad()
def test_bf16_conversion_keeps_norms_in_float32_and_stays_close():
    cfg = tiny()
    model = randomized(create_model(cfg, "cpu")).eval()
    tokens, mask = text_inputs(cfg)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    ref = model(x, t, tokens, mask)
    model.convert_to_dtype(torch.bfloat16)
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.bfloat16
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32
    assert model.final_ln.weight.dtype == torch.float32 and model.time_embed[0].weight.dtype == torch.float32
    out = model(x, t, tokens, mask)
    assert out.dtype == torch.float32
    assert (out - ref).abs().mean() < 0.05 * ref.abs().mean()


@torch.no_grad()
def test_whole_model_cast_to_bf16_runs_with_float32_inputs():
    """As DeepSpeed's bf16 mode leaves it: every parameter bf16, inputs as the data loader gives them."""
    cfg = tiny("upsampler")
    model = randomized(create_model(cfg, "cpu")).eval()
    tokens, mask = text_inputs(cfg)
    x, t, kw = torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), variant_kwargs(cfg)
    ref = model(x, t, tokens, mask, **kw)
    out = model.to(torch.bfloat16)(x, t, tokens, mask, **kw)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


# ---- glide-text2im's maths, written out independently (einsum with split scale, as in the paper code)
def test_image_attention_matches_glide_head_split_and_text_kv_order():
    from training.nn.attention import qkv_attention

    g = torch.Generator().manual_seed(0)
    b, heads, ch, t, s = 2, 3, 4, 6, 5
    qkv = torch.randn(b, heads * 3 * ch, t, generator=g)
    ekv = torch.randn(b, heads * 2 * ch, s, generator=g)
    q, k, v = qkv.reshape(b * heads, ch * 3, t).split(ch, dim=1)
    ek, ev = ekv.reshape(b * heads, ch * 2, s).split(ch, dim=1)
    k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    ref = torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, t)
    torch.testing.assert_close(qkv_attention(qkv, heads, ekv), ref)


def test_text_attention_matches_glide_layout():
    from training.nn.text_transformer import MultiheadAttention

    torch.manual_seed(0)
    attn = MultiheadAttention(width=12, heads=3)
    x = torch.randn(2, 7, 12)
    qkv = attn.c_qkv(x).view(2, 7, 3, -1)
    q, k, v = torch.split(qkv, 4, dim=-1)
    scale = 1 / math.sqrt(math.sqrt(4))
    w = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale), dim=-1)
    ref = attn.c_proj(torch.einsum("bhts,bshc->bthc", w, v).reshape(2, 7, -1))
    torch.testing.assert_close(attn(x), ref)


def test_timestep_embedding_is_cos_then_sin_with_glide_frequencies():
    from training.nn.layers import timestep_embedding

    emb = timestep_embedding(torch.tensor([0.0, 3.5]), 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3.5 * freqs), torch.sin(3.5 * freqs)]))
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


@torch.no_grad()
def test_cached_text_keys_values_give_the_same_output_for_all_variants():
    for kind in ("base", "upsampler-inpaint"):
        cfg = tiny(kind)
        model = randomized(create_model(cfg, "cpu")).eval()
        tokens, mask = text_inputs(cfg)
        x, t, kw = torch.randn(2, 3, 32, 32), torch.tensor([10, 700]), variant_kwargs(cfg)
        emb = model.encode_text(tokens, mask)
        cached = model.add_encoder_kv(emb)
        assert [kv.shape[0] for kv in cached["encoder_kv"]] == [2] * len(model.attention_blocks())
        torch.testing.assert_close(model(x, t, text_emb=cached, **kw), model(x, t, text_emb=emb, **kw))


def test_image_attention_runs_on_the_fused_sdpa_kernel():
    """q, k, v reach SDPA with contiguous channels; else CPU falls back to the ~10x slower maths path
    (which sdpa_kernel(FLASH_ATTENTION) would refuse with 'No available kernel')."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from training.nn.attention import AttentionBlock

    torch.manual_seed(0)
    block = randomized(AttentionBlock(32, num_head_channels=16, encoder_channels=8)).eval()
    x, text = torch.randn(2, 32, 8, 8), torch.randn(2, 8, 5)
    with torch.no_grad():
        ref = block(x, text)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.testing.assert_close(block(x, text), ref)
            torch.testing.assert_close(block(x, (block.project_encoder_kv(text),)), ref)  # layer_index -1
