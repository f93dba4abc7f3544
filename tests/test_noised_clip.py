"""The noised CLIP: sizes, glide-exact maths after importing released-layout checkpoints, training
signal, and the CLIP-guidance gradient samplers use."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from shards import UserError
from training.import_clip import convert_clip_checkpoint, merge_clip_halves, missing_clip_half
from training.model_config import load_model_config
from training.nn.noised_clip import (NoisedClipConfig, clip_tokens_and_mask, create_noised_clip,
                                     noised_clip_config)
from training.sampling.clip_cond import clip_cond_fn

# Small enough for CPU tests, but with glide's head width (64, assumed by the importer) and token
# counts that are not multiples of glide's attention block (32): 17 image tokens, 10 text tokens.
SMALL = dict(image_size=16, patch_size=4, n_vocab=49408, max_text_len=10, n_embd=24,
             n_head_state_text=64, n_head_text=1, n_xf_blocks_text=2,
             n_head_state_image=64, n_head_image=2, n_xf_blocks_image=2, n_timesteps=50)
MEANS = torch.tensor([122.77093945, 116.74601272, 104.09373519], dtype=torch.float64)
STDS = torch.tensor([68.50053285, 66.63215831, 70.32316309], dtype=torch.float64)


def tiny_model(dtype=torch.float32, seed=0, **overrides):
    torch.manual_seed(seed)
    return create_noised_clip(NoisedClipConfig.from_fields(SMALL | overrides)).to(dtype)


def toy_inputs(cfg, batch=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g, dtype=dtype) * 2 - 1
    t = torch.randint(0, cfg.n_timesteps, (batch,), generator=g)
    tokens = torch.randint(1, cfg.n_vocab, (batch, cfg.max_text_len), generator=g)
    lens = torch.randint(2, cfg.max_text_len + 1, (batch,), generator=g)
    mask = torch.arange(cfg.max_text_len)[None] < lens[:, None]
    return x, t, tokens.masked_fill(~mask, 0), mask


# ---- a released-layout checkpoint and glide's computation, written out in float64 --------------
def released_layout_state_dicts(cfg, seed=0):
    """Random (image_sd, text_sd) with the key names and shapes of clip_image_enc.pt / clip_text_enc.pt."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    def blocks(width, n):
        sd = {}
        for i in range(n):
            p = f"blocks.block_{i}."
            sd |= {p + "f_attn.ln.g": 1 + rnd(width), p + "f_attn.ln.b": rnd(width),
                   p + "f_attn.f_q.w": rnd(width, width), p + "f_attn.f_q.b": rnd(width),
                   p + "f_attn.f_k.w": rnd(width, width),
                   p + "f_attn.f_v.w": rnd(width, width), p + "f_attn.f_v.b": rnd(width),
                   p + "f_attn.f_c.w": rnd(width, width), p + "f_attn.f_c.b": rnd(width),
                   p + "f_mlp.ln.g": 1 + rnd(width), p + "f_mlp.ln.b": rnd(width),
                   p + "f_mlp.f_1.w": rnd(4 * width, width), p + "f_mlp.f_1.b": rnd(4 * width),
                   p + "f_mlp.f_2.w": rnd(width, 4 * width), p + "f_mlp.f_2.b": rnd(width)}
        return sd

    wi, wt = cfg.n_head_image * 64, cfg.n_head_text * 64
    n_pos = 1 + (cfg.image_size // cfg.patch_size) ** 2
    image = {"blocks.input.w_t": rnd(cfg.n_timesteps, wi, std=1.0),
             "blocks.input.patch_proj": rnd(wi, 3, cfg.patch_size, cfg.patch_size),
             "blocks.input.w_pos": rnd(n_pos, wi), "blocks.input.ln.g": 1 + rnd(wi),
             "blocks.input.ln.b": rnd(wi), **blocks(wi, cfg.n_xf_blocks_image),
             "blocks.output.ln.g": 1 + rnd(wi), "blocks.output.ln.b": rnd(wi),
             "blocks.output.f.w": rnd(cfg.n_embd, wi)}
    text = {"blocks.input.w_voc": rnd(cfg.n_vocab, wt, std=0.5), "blocks.input.w_pos": rnd(cfg.max_text_len, wt),
            **blocks(wt, cfg.n_xf_blocks_text),
            "blocks.output.ln.g": 1 + rnd(wt), "blocks.output.ln.b": rnd(wt),
            "blocks.output.f.w": rnd(cfg.n_embd, wt)}
    return image, text


def ref_transformer(sd, h, n_blocks, n_head, causal):
    """glide's blocks: context padded to a multiple of 32, -1e10 bias on padded (and future) keys,
    q and k each scaled by sqrt(1/sqrt(d)), einsum attention; then the 4x GELU MLP."""
    b, n, c = h.shape
    padded = 32 * math.ceil(n / 32)
    i = torch.arange(padded)
    allowed = (i[None, :] < n) & (i[:, None] < n)
    if causal:
        allowed &= i[None, :] <= i[:, None]
    bias = torch.zeros(padded, padded, dtype=h.dtype).masked_fill(~allowed, -1e10)
    d = c // n_head
    s = math.sqrt(1 / math.sqrt(d))
    for k in range(n_blocks):
        p = lambda name: sd[f"blocks.block_{k}.{name}"]  # noqa: E731
        r = F.layer_norm(h, (c,), p("f_attn.ln.g"), p("f_attn.ln.b"), 1e-5)
        q = F.linear(r, p("f_attn.f_q.w"), p("f_attn.f_q.b"))
        kk = F.linear(r, p("f_attn.f_k.w"))
        v = F.linear(r, p("f_attn.f_v.w"), p("f_attn.f_v.b"))
        q, kk, v = (F.pad(y, (0, 0, 0, padded - n)).view(b, padded, n_head, d).permute(0, 2, 1, 3)
                    for y in (q, kk, v))
        w = torch.softmax(torch.einsum("bhcd,bhkd->bhck", q * s, kk * s) + bias, dim=-1)
        r = torch.einsum("bhck,bhkd->bhcd", w, v).permute(0, 2, 1, 3).reshape(b, padded, c)[:, :n]
        h = h + F.linear(r, p("f_attn.f_c.w"), p("f_attn.f_c.b"))
        r = F.layer_norm(h, (c,), p("f_mlp.ln.g"), p("f_mlp.ln.b"), 1e-5)
        h = h + F.linear(F.gelu(F.linear(r, p("f_mlp.f_1.w"), p("f_mlp.f_1.b"))), p("f_mlp.f_2.w"), p("f_mlp.f_2.b"))
    return h


def ref_image_embedding(sd, cfg, x_t, t):
    sd = {k: v.double() for k, v in sd.items()}
    pix = ((x_t.double() + 1) * 127.5 - MEANS[None, :, None, None]) / STDS[None, :, None, None]
    h = F.conv2d(pix, sd["blocks.input.patch_proj"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    h = torch.cat([sd["blocks.input.w_t"][t][:, None], h], 1) + sd["blocks.input.w_pos"][None]
    width = h.shape[-1]
    h = F.layer_norm(h, (width,), sd["blocks.input.ln.g"], sd["blocks.input.ln.b"], 1e-5)
    h = ref_transformer(sd, h, cfg.n_xf_blocks_image, cfg.n_head_image, causal=False)
    z = F.linear(F.layer_norm(h[:, 0], (width,), sd["blocks.output.ln.g"], sd["blocks.output.ln.b"], 1e-5),
                 sd["blocks.output.f.w"])
    return z / (z.norm(dim=-1, keepdim=True) + 1e-12)


def ref_text_embedding(sd, cfg, tokens, mask):
    sd = {k: v.double() for k, v in sd.items()}
    h = sd["blocks.input.w_voc"][tokens] + sd["blocks.input.w_pos"][None]
    h = ref_transformer(sd, h, cfg.n_xf_blocks_text, cfg.n_head_text, causal=True)
    last = h[torch.arange(len(h)), mask.sum(-1) - 1]
    z = F.linear(F.layer_norm(last, (h.shape[-1],), sd["blocks.output.ln.g"], sd["blocks.output.ln.b"], 1e-5),
                 sd["blocks.output.f.w"])
    return z / (z.norm(dim=-1, keepdim=True) + 1e-12)


def imported_small_model():
    cfg = NoisedClipConfig.from_fields(SMALL)
    image_sd, text_sd = released_layout_state_dicts(cfg)
    merged_sd, model_cfg = merge_clip_halves(convert_clip_checkpoint(image_sd, "clip-image"),
                                             convert_clip_checkpoint(text_sd, "clip-text"))
    clip_cfg = noised_clip_config(model_cfg)
    model = create_noised_clip(clip_cfg).double()
    model.load_state_dict(merged_sd)  # strict: every key present, none extra
    return model, clip_cfg, image_sd, text_sd


# ---- tests -------------------------------------------------------------------------------------
def test_tiny_config_builds_and_gives_unit_embeddings_and_batch_logits():
    model = create_noised_clip(load_model_config("tiny-clip"))
    cfg = model.clip_config
    x, t, tokens, mask = toy_inputs(cfg, batch=3)
    z_i, z_t = model.encode_image(x, t), model.encode_text(tokens, mask)
    assert z_i.shape == z_t.shape == (3, cfg.n_embd)
    torch.testing.assert_close(z_i.norm(dim=-1), torch.ones(3))
    logits = model(x, t, tokens, mask)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, model.logit_scale_value() * z_i @ z_t.T)


def test_timestep_changes_the_image_embedding():
    model = tiny_model()
    x, _, _, _ = toy_inputs(model.clip_config, batch=2)
    early, late = model.encode_image(x, torch.tensor([0, 0])), model.encode_image(x, torch.tensor([40, 40]))
    assert (early - late).abs().max() > 1e-3
    torch.testing.assert_close(model.encode_image(x, torch.tensor([40, 40])), late)


def test_text_after_the_end_token_is_ignored():
    model = tiny_model()
    _, _, tokens, mask = toy_inputs(model.clip_config, batch=3)
    scribbled = torch.where(mask, tokens, torch.randint_like(tokens, 1, 300))
    torch.testing.assert_close(model.encode_text(scribbled, mask), model.encode_text(tokens, mask))


def test_imported_released_layout_matches_glide_maths_in_float64():
    model, cfg, image_sd, text_sd = imported_small_model()
    x, t, tokens, mask = toy_inputs(cfg, batch=4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x, t), ref_image_embedding(image_sd, cfg, x, t),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.encode_text(tokens, mask), ref_text_embedding(text_sd, cfg, tokens, mask),
                                   rtol=1e-10, atol=1e-10)
    assert model.logit_scale_value().item() == pytest.approx(100.0)


def test_one_half_alone_reports_the_missing_tower_and_keeps_released_sizes_for_it():
    cfg = NoisedClipConfig.from_fields(SMALL)
    image_sd, _ = released_layout_state_dicts(cfg)
    sd, model_cfg = convert_clip_checkpoint(image_sd, "clip-image")
    assert model_cfg.kind == "clip" and model_cfg.tokenizer == {"type": "clip"}
    assert (model_cfg.image_size, model_cfg.diffusion_steps, model_cfg.extra["patch_size"]) == (16, 50, 4)
    assert (model_cfg.n_vocab, model_cfg.text_ctx) == (65536, 77)  # released text tower sizes
    assert missing_clip_half(sd) == "clip-text"


def _drop(sd, key):
    return {k: v for k, v in sd.items() if k != key}


@pytest.mark.parametrize("kind, corrupt, expected", [
    ("clip-image", lambda sd: _drop(sd, "blocks.block_1.f_attn.f_v.b"), "blocks.block_1.f_attn.f_v.b"),
    ("clip-image", lambda sd: sd | {"blocks.block_0.f_mlp.f_1.w": torch.zeros(3, 3)}, "blocks.block_0.f_mlp.f_1.w"),
    ("clip-image", lambda sd: sd | {"blocks.block_0.f_attn.f_k.b": torch.zeros(128)}, "blocks.block_0.f_attn.f_k.b"),
    ("clip-image", lambda sd: _drop(sd, "blocks.input.w_t") | {"blocks.input.pred_state": torch.zeros(128)},
     "pred_state"),
    ("clip-text", lambda sd: sd | {"blocks.input.w_pos": [0.0]}, "blocks.input.w_pos"),
    ("clip-text", lambda sd: sd | {"blocks.input.w_voc": torch.zeros(49408, 64, dtype=torch.long)}, "blocks.input.w_voc"),
    ("clip-text", lambda sd: _drop(sd, "blocks.output.f.w"), "blocks.output.f.w"),
    ("clip-both", lambda sd: sd, "clip-both"),
])
def test_bad_checkpoints_raise_one_line_user_errors_naming_the_key(kind, corrupt, expected):
    image_sd, text_sd = released_layout_state_dicts(NoisedClipConfig.from_fields(SMALL))
    with pytest.raises(UserError) as err:
        convert_clip_checkpoint(corrupt(text_sd if kind == "clip-text" else image_sd), kind)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_released_config_is_glides_and_builds_on_meta_instantly():
    model_cfg = load_model_config("glide-filtered-clip")
    assert noised_clip_config(model_cfg) == NoisedClipConfig()  # defaults = glide's clip/config.yaml
    start = time.perf_counter()
    with torch.device("meta"):
        model = create_noised_clip(model_cfg)
    assert time.perf_counter() - start < 2.0
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 158_123_265
    assert tuple(model.image_encoder.blocks["input"].w_t.shape) == (1000, 768)


def test_model_config_errors_name_the_key():
    cfg = load_model_config("tiny-clip")
    cfg.extra = dict(cfg.extra, n_layers=3)
    with pytest.raises(UserError, match=r"^model config \(kind clip\): unknown key 'extra.n_layers'$"):
        create_noised_clip(cfg)
    cfg = load_model_config("tiny-clip")
    cfg.text_ctx = 0
    with pytest.raises(UserError, match=r"^model config \(kind clip\): key 'text_ctx': Input should be greater than 0"):
        create_noised_clip(cfg)
    cfg = load_model_config("tiny-clip")
    cfg.tokenizer = {"type": "gpt2"}
    with pytest.raises(UserError, match="key 'tokenizer.type'"):
        create_noised_clip(cfg)
    with pytest.raises(UserError, match=r"^noised CLIP: key 'logit_scale': Input should be less than or equal to 100"):
        NoisedClipConfig.from_fields({"logit_scale": 101.0}, "noised CLIP")


def test_contrastive_loss_decreases_on_a_toy_batch():
    model = create_noised_clip(load_model_config("tiny-clip"))
    x, t, tokens, mask = toy_inputs(model.clip_config, batch=6, seed=3)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        loss, scale = model.contrastive_loss(x, t, tokens, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert scale.requires_grad is False and 1 < scale.item() <= 100
    assert model.logit_scale.grad is not None  # learned in tiny-clip


def test_cond_fn_is_the_gradient_of_the_scaled_clip_logit():
    model = tiny_model(dtype=torch.float64)
    x, t, tokens, mask = toy_inputs(model.clip_config, batch=2, dtype=torch.float64)
    cond_fn = clip_cond_fn(model, tokens, mask, guidance_scale=3.0)
    grad = cond_fn(x, t, tokens=None, mask=None)  # diffusion-model kwargs are ignored
    assert grad.shape == x.shape and grad.grad_fn is None and not grad.requires_grad
    assert all(p.grad is None for p in model.parameters())

    with torch.no_grad():
        z_t = model.encode_text(tokens, mask)

        def objective(xx):
            return 3.0 * model.logit_scale_value() * (model.encode_image(xx, t) * z_t).sum()

        g = torch.Generator().manual_seed(7)
        for _ in range(3):
            direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
            eps = 1e-5
            numeric = (objective(x + eps * direction) - objective(x - eps * direction)) / (2 * eps)
            assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-8)


def test_captions_are_framed_like_glides_clip_tokenizer():
    from training.tokenizers import build_tokenizer

    tok = build_tokenizer({"type": "clip"})
    tokens, mask = clip_tokens_and_mask(tok, ["a red square", "", "word " * 40], text_ctx=8)
    sot, eot = 49406, 49407
    assert tokens[0].tolist() == [sot, 320, 736, 3999, eot, 0, 0, 0]
    assert tokens[1].tolist()[:2] == [sot, eot] and mask[1].sum() == 2  # CLIP has no empty text
    assert tokens[2, 0] == sot and tokens[2, -1] == eot and bool(mask[2].all())
    assert mask[0].tolist() == [True] * 5 + [False] * 3


def test_an_empty_caption_from_the_data_tokenizer_reads_as_glides_sot_eot():
    from training.tokenizers import build_tokenizer

    tok = build_tokenizer({"type": "clip"})
    model = tiny_model()
    data_tokens, data_mask = tok.batch(["", "a red square"], 10)  # "" is all padding there
    assert not data_mask[0].any()
    glide_tokens, glide_mask = clip_tokens_and_mask(tok, ["", "a red square"], 10)
    torch.testing.assert_close(model.encode_text(data_tokens, data_mask),
                               model.encode_text(glide_tokens, glide_mask))


def test_conv_patch_stem_gives_the_same_tokens_shape_and_checks_the_patch_size():
    cfg = load_model_config("tiny-clip")   # a ViT tower at 64px with 8px patches through the conv stem
    cfg.image_size, cfg.text_ctx = 64, 24
    cfg.extra = dict(cfg.extra, patch_size=8, patch_stem="conv", n_embd=64, n_head_state_image=16, n_head_image=4)
    torch.manual_seed(0)
    model = create_noised_clip(cfg)
    stem = model.image_encoder.blocks["input"].patch_stem
    assert [m.stride for m in stem if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3  # 8px patches
    assert not any(k.endswith("patch_proj") for k in model.state_dict())
    x, t, tokens, mask = toy_inputs(model.clip_config, batch=2)
    tokens_out = model.image_encoder.blocks["input"](x, t)
    assert tokens_out.shape == (2, 1 + (64 // 8) ** 2, 64)
    torch.testing.assert_close(model.encode_image(x, t).norm(dim=-1), torch.ones(2))
    with pytest.raises(UserError, match=r"key 'patch_size': 6 with patch_stem 'conv' must be a power of 2"):
        create_noised_clip(dict(patch_size=6, image_size=48, patch_stem="conv"))
    with pytest.raises(UserError, match=r"key 'extra.patch_stem'"):
        cfg.extra = dict(cfg.extra, patch_stem="resnet")
        create_noised_clip(cfg)


CONV = dict(image_tower="conv", image_size=16, conv_widths=[8, 16], n_vocab=49408, max_text_len=10,
            n_embd=24, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1, n_timesteps=50,
            learn_logit_scale=True)


def test_conv_image_tower_gives_unit_embeddings_and_learns_the_timestep_as_a_bias():
    torch.manual_seed(0)
    model = create_noised_clip(CONV)
    keys = list(model.state_dict())
    assert any(k.startswith("image_encoder.time_bias.") for k in keys)
    assert not any(k.startswith("image_encoder.blocks.input") for k in keys)  # no ViT (glide) keys
    x, t, tokens, mask = toy_inputs(model.clip_config, batch=4)
    z = model.encode_image(x, t)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4))
    # at init the timestep bias is zero: a clean CLIP (t = 0 always) is the CNN alone
    torch.testing.assert_close(model.encode_image(x, torch.full_like(t, 40)), model.encode_image(x, torch.zeros_like(t)))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.contrastive_loss(x, t, tokens, mask)[0].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("image_encoder."))
    opt.step()   # the rows of the timesteps it trained on (t) moved, the others did not
    assert (model.encode_image(x, t) - model.encode_image(x, torch.zeros_like(t))).abs().max() > 1e-4


def test_conv_image_tower_sees_a_small_object_wherever_it_sits():
    """The global max pool: a few bright pixels move the embedding as much in a corner as in the
    middle (a mean pool would dilute them alike, a class token could learn to look at the middle)."""
    torch.manual_seed(0)
    model = create_noised_clip(dict(CONV, image_size=32, conv_widths=[8, 16, 16]))
    blank = torch.full((1, 3, 32, 32), -0.2)
    t = torch.zeros(1, dtype=torch.long)
    base = model.encode_image(blank, t)
    moved = []
    for y, x in ((2, 2), (14, 14), (26, 3)):
        img = blank.clone()
        img[:, 0, y:y + 3, x:x + 3] = 1.0
        moved.append((model.encode_image(img, t) - base).norm().item())
    assert min(moved) > 0.2 * max(moved) > 0


def test_conv_image_tower_config_is_checked():
    with pytest.raises(UserError, match=r"key 'conv_widths': 3 blocks halve the image that many times, and image_size 20"):
        create_noised_clip(dict(CONV, image_size=20, conv_widths=[8, 8, 8]))
    with pytest.raises(UserError, match=r"image_tower"):
        create_noised_clip(dict(CONV, image_tower="resnet"))
    # patch_size is the ViT tower's: a conv CLIP at 24 px ignores a patch_size of 16 ...
    assert type(create_noised_clip(dict(CONV, image_size=24, patch_size=16)).image_encoder).__name__ == "ConvImageEncoder"
    with pytest.raises(UserError, match=r"key 'image_size': 24 is not a multiple of patch_size 16"):
        create_noised_clip(dict(CONV, image_size=24, patch_size=16, image_tower="vit"))  # ... but the ViT's
    with torch.device("meta"):
        model = create_noised_clip(dict(CONV, image_size=64, conv_widths=[32, 64, 128, 128], n_embd=64))
    assert model.logit_scale.device.type == "meta"
