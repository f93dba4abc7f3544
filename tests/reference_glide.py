"""Test-side reference of openai/glide-text2im's Text2ImUNet, written from its source semantics.

Two independent pieces, computed straight from hyper-parameters and a state dict with
torch.nn.functional, in float64, sharing no code with training/:
  glide_param_shapes(hp)        the parameter names and shapes glide's constructors create
  reference_forward(sd, hp,...) the forward pass (Text2ImUNet and its super-res / inpaint variants)
plus random_released_state_dict(hp), which fills that layout with random weights stored with the
dtypes glide's convert_to_fp16() leaves (torso convs, transformer linears, token embedding and
transformer_proj in float16; norms, time embedding, positional/padding embeddings, out in float32).

`hp` keys: model_channels, num_res_blocks, channel_mult (tuple), attention_ds (tuple of downsample
rates), num_heads, num_head_channels, num_heads_upsample, use_scale_shift_norm, resblock_updown,
text_ctx, xf_width, xf_layers, xf_heads, xf_final_ln, xf_padding, n_vocab, inpaint, super_res.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# layout: glide's UNetModel / Text2ImUNet constructors, as a walk over blocks
# ---------------------------------------------------------------------------------------------


def conv_in_channels(hp) -> int:
    return 3 * (1 + int(hp["inpaint"]) + int(hp["super_res"])) + int(hp["inpaint"])


def _heads(hp, channels, upsample=False):
    if hp["num_head_channels"] != -1:
        return channels // hp["num_head_channels"]
    n = hp["num_heads_upsample"] if upsample else hp["num_heads"]
    return hp["num_heads"] if n == -1 else n


def unet_blocks(hp):
    """glide's block structure: {"input": [...], "middle": [...], "output": [...]}, each block a
    list of layers: ("conv", cin, cout) | ("res", cin, cout, updown) | ("attn", ch, heads) |
    ("down", ch) | ("up", ch). updown is None, "down" or "up"."""
    mc, mult = hp["model_channels"], hp["channel_mult"]
    ch = input_ch = mult[0] * mc
    inputs = [[("conv", conv_in_channels(hp), ch)]]
    chans = [ch]
    ds = 1
    for level, m in enumerate(mult):
        for _ in range(hp["num_res_blocks"]):
            layers = [("res", ch, m * mc, None)]
            ch = m * mc
            if ds in hp["attention_ds"]:
                layers.append(("attn", ch, _heads(hp, ch)))
            inputs.append(layers)
            chans.append(ch)
        if level != len(mult) - 1:
            inputs.append([("res", ch, ch, "down")] if hp["resblock_updown"] else [("down", ch)])
            chans.append(ch)
            ds *= 2
    middle = [("res", ch, ch, None), ("attn", ch, _heads(hp, ch)), ("res", ch, ch, None)]
    outputs = []
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(hp["num_res_blocks"] + 1):
            ich = chans.pop()
            layers = [("res", ch + ich, m * mc, None)]
            ch = m * mc
            if ds in hp["attention_ds"]:
                layers.append(("attn", ch, _heads(hp, ch, upsample=True)))
            if level and i == hp["num_res_blocks"]:
                layers.append(("res", ch, ch, "up") if hp["resblock_updown"] else ("up", ch))
                ds //= 2
            outputs.append(layers)
    return {"input": inputs, "middle": middle, "output": outputs, "out_channels": input_ch}


def glide_param_shapes(hp) -> dict[str, tuple]:
    """{state-dict key: shape} of glide's Text2ImUNet (or variant) for these hyper-parameters."""
    shapes: dict[str, tuple] = {}
    mc = hp["model_channels"]
    emb = 4 * mc
    xf = hp["xf_width"]

    def conv(prefix, cin, cout, k, dims=2):
        shapes[f"{prefix}.weight"] = (cout, cin) + (k,) * dims
        shapes[f"{prefix}.bias"] = (cout,)

    def norm(prefix, c):
        shapes[f"{prefix}.weight"] = (c,)
        shapes[f"{prefix}.bias"] = (c,)

    def linear(prefix, cin, cout):
        shapes[f"{prefix}.weight"] = (cout, cin)
        shapes[f"{prefix}.bias"] = (cout,)

    def layer(prefix, spec):
        kind = spec[0]
        if kind == "conv":
            conv(prefix, spec[1], spec[2], 3)
        elif kind == "res":
            _, cin, cout, _ = spec
            norm(f"{prefix}.in_layers.0", cin)
            conv(f"{prefix}.in_layers.2", cin, cout, 3)
            linear(f"{prefix}.emb_layers.1", emb, 2 * cout if hp["use_scale_shift_norm"] else cout)
            norm(f"{prefix}.out_layers.0", cout)
            conv(f"{prefix}.out_layers.3", cout, cout, 3)
            if cin != cout:
                conv(f"{prefix}.skip_connection", cin, cout, 1)
        elif kind == "attn":
            c = spec[1]
            norm(f"{prefix}.norm", c)
            conv(f"{prefix}.qkv", c, 3 * c, 1, dims=1)
            if xf:
                conv(f"{prefix}.encoder_kv", xf, 2 * c, 1, dims=1)
            conv(f"{prefix}.proj_out", c, c, 1, dims=1)
        elif kind == "down":
            conv(f"{prefix}.op", spec[1], spec[1], 3)
        elif kind == "up":
            conv(f"{prefix}.conv", spec[1], spec[1], 3)

    linear("time_embed.0", mc, emb)
    linear("time_embed.2", emb, emb)
    blocks = unet_blocks(hp)
    for i, layers in enumerate(blocks["input"]):
        for j, spec in enumerate(layers):
            layer(f"input_blocks.{i}.{j}", spec)
    for j, spec in enumerate(blocks["middle"]):
        layer(f"middle_block.{j}", spec)
    for i, layers in enumerate(blocks["output"]):
        for j, spec in enumerate(layers):
            layer(f"output_blocks.{i}.{j}", spec)
    ch = blocks["out_channels"]
    norm("out.0", ch)
    conv("out.2", ch, 6, 3)
    if xf:
        for n in range(hp["xf_layers"]):
            p = f"transformer.resblocks.{n}"
            linear(f"{p}.attn.c_qkv", xf, 3 * xf)
            linear(f"{p}.attn.c_proj", xf, xf)
            norm(f"{p}.ln_1", xf)
            linear(f"{p}.mlp.c_fc", xf, 4 * xf)
            linear(f"{p}.mlp.c_proj", 4 * xf, xf)
            norm(f"{p}.ln_2", xf)
        if hp["xf_final_ln"]:
            norm("final_ln", xf)
        shapes["token_embedding.weight"] = (hp["n_vocab"], xf)
        shapes["positional_embedding"] = (hp["text_ctx"], xf)
        if hp["xf_padding"]:
            shapes["padding_embedding"] = (hp["text_ctx"], xf)
        linear("transformer_proj", xf, 4 * mc)
    return shapes


def _stored_in_fp16(key: str) -> bool:
    """Which tensors glide's convert_to_fp16() turns to float16 (and a state dict saved after it keeps)."""
    if key.startswith(("input_blocks.", "middle_block.", "output_blocks.")):
        # fp16_util.convert_module_to_f16 touches Conv1d/2d/3d only: not norms, not emb_layers' Linear.
        return ".emb_layers." not in key and ".in_layers.0." not in key and ".out_layers.0." not in key \
            and ".norm." not in key
    if key.startswith("transformer."):
        return ".ln_" not in key  # xf.convert_module_to_f16: Linear (and Conv2d) only
    # token_embedding.to(fp16) is in place; positional/padding_embedding.to() on a Parameter is not.
    return key.startswith(("transformer_proj.", "token_embedding."))


def random_released_state_dict(hp, seed: int = 0, fp16: bool = True) -> dict[str, torch.Tensor]:
    """Random weights in glide's key layout; nothing zero (every path matters), sane activations."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in glide_param_shapes(hp).items():
        is_norm = len(shape) == 1 and (".in_layers.0." in key or ".out_layers.0." in key or ".norm." in key
                                        or ".ln_" in key or key.startswith(("final_ln.", "out.0.")))
        if is_norm and key.endswith(".weight"):
            t = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif len(shape) == 1:
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif key in ("positional_embedding", "padding_embedding", "token_embedding.weight"):
            t = 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
        out[key] = t.to(torch.float16 if fp16 and _stored_in_fp16(key) else torch.float32)
    return out


# ---------------------------------------------------------------------------------------------
# forward: glide's computations, float64 throughout
# ---------------------------------------------------------------------------------------------


def _group_norm(x, sd, prefix, swish):
    y = F.group_norm(x, 32, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)
    return y * torch.sigmoid(y) if swish else y


def _conv(x, sd, prefix, stride=1, padding=None):
    w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    if w.dim() == 3:
        return F.conv1d(x, w, b)
    k = w.shape[-1]
    return F.conv2d(x, w, b, stride=stride, padding=k // 2 if padding is None else padding)


def _silu(x):
    return x * torch.sigmoid(x)


def _res_block(x, emb, sd, p, spec, hp):
    _, cin, cout, updown = spec
    h = _group_norm(x, sd, f"{p}.in_layers.0", swish=True)
    if updown == "down":
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    elif updown == "up":
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    h = _conv(h, sd, f"{p}.in_layers.2")
    e = F.linear(_silu(emb), sd[f"{p}.emb_layers.1.weight"], sd[f"{p}.emb_layers.1.bias"])[:, :, None, None]
    if hp["use_scale_shift_norm"]:
        scale, shift = e.chunk(2, dim=1)
        h = _group_norm(h, sd, f"{p}.out_layers.0", swish=False) * (1 + scale) + shift
        h = _silu(h)
    else:
        h = _group_norm(h + e, sd, f"{p}.out_layers.0", swish=True)
    h = _conv(h, sd, f"{p}.out_layers.3")
    skip = x if cin == cout else _conv(x, sd, f"{p}.skip_connection")
    return skip + h


def _attention_block(x, sd, p, heads, xf_out):
    b, c, hgt, wid = x.shape
    t = hgt * wid
    qkv = _conv(_group_norm(x, sd, f"{p}.norm", swish=False).reshape(b, c, t), sd, f"{p}.qkv")
    ch = c // heads
    q, k, v = qkv.reshape(b * heads, 3 * ch, t).split(ch, dim=1)  # per head [q | k | v]
    if xf_out is not None:
        ekv = _conv(xf_out, sd, f"{p}.encoder_kv")
        ek, ev = ekv.reshape(b * heads, 2 * ch, -1).split(ch, dim=1)
        k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)  # text first
    scale = ch ** -0.25
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, t)
    return x + _conv(a, sd, f"{p}.proj_out").reshape(b, c, hgt, wid)


def _apply_block(h, emb, xf_out, sd, prefix, layers, hp):
    for j, spec in enumerate(layers):
        p = f"{prefix}.{j}"
        kind = spec[0]
        if kind == "conv":
            h = _conv(h, sd, p)
        elif kind == "res":
            h = _res_block(h, emb, sd, p, spec, hp)
        elif kind == "attn":
            h = _attention_block(h, sd, p, spec[2], xf_out)
        elif kind == "down":
            h = _conv(h, sd, f"{p}.op", stride=2, padding=1)
        elif kind == "up":
            h = _conv(F.interpolate(h, scale_factor=2, mode="nearest"), sd, f"{p}.conv")
    return h


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)


def _text_encoder(sd, hp, tokens, mask):
    """glide's get_text_emb: -> (xf_proj [B, 4*mc], xf_out [B, xf_width, L])."""
    x = sd["token_embedding.weight"][tokens.long()] + sd["positional_embedding"][None]
    if hp["xf_padding"]:
        x = torch.where(mask[..., None], x, sd["padding_embedding"][None])
    heads = hp["xf_heads"]
    for n in range(hp["xf_layers"]):
        p = f"transformer.resblocks.{n}"
        y = _layer_norm(x, sd, f"{p}.ln_1")
        qkv = F.linear(y, sd[f"{p}.attn.c_qkv.weight"], sd[f"{p}.attn.c_qkv.bias"])
        b, L, w3 = qkv.shape
        ch = w3 // heads // 3
        q, k, v = qkv.view(b, L, heads, 3 * ch).split(ch, dim=-1)
        scale = ch ** -0.25
        weight = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale), dim=-1)
        a = torch.einsum("bhts,bshc->bthc", weight, v).reshape(b, L, -1)
        x = x + F.linear(a, sd[f"{p}.attn.c_proj.weight"], sd[f"{p}.attn.c_proj.bias"])
        y = _layer_norm(x, sd, f"{p}.ln_2")
        y = F.gelu(F.linear(y, sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"]))
        x = x + F.linear(y, sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])
    if hp["xf_final_ln"]:
        x = _layer_norm(x, sd, "final_ln")
    xf_proj = F.linear(x[:, -1], sd["transformer_proj.weight"], sd["transformer_proj.bias"])
    return xf_proj, x.permute(0, 2, 1)


def _timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def reference_forward(state_dict, hp, x, timesteps, tokens, mask, *, low_res=None, inpaint_image=None,
                      inpaint_mask=None) -> torch.Tensor:
    """glide's Text2ImUNet(.forward) family in float64: x [B, 3, H, W] -> [B, 6, H, W]."""
    sd = {k: v.detach().to(torch.float64) for k, v in state_dict.items()}
    x = x.double()
    if hp["inpaint"]:
        img = torch.zeros_like(x) if inpaint_image is None else inpaint_image.double()
        m = torch.zeros_like(x[:, :1]) if inpaint_mask is None else inpaint_mask.double()
        parts = [x, img * m, m]
    else:
        parts = [x]
    if hp["super_res"]:
        parts.append(F.interpolate(low_res.double(), x.shape[-2:], mode="bilinear", align_corners=False))
    h = torch.cat(parts, dim=1)

    mc = hp["model_channels"]
    emb = _timestep_embedding(timesteps, mc)
    emb = F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])
    emb = F.linear(_silu(emb), sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    xf_out = None
    if hp["xf_width"]:
        xf_proj, xf_out = _text_encoder(sd, hp, tokens, mask)
        emb = emb + xf_proj
    blocks = unet_blocks(hp)
    skips = []
    for i, layers in enumerate(blocks["input"]):
        h = _apply_block(h, emb, xf_out, sd, f"input_blocks.{i}", layers, hp)
        skips.append(h)
    h = _apply_block(h, emb, xf_out, sd, "middle_block", blocks["middle"], hp)
    for i, layers in enumerate(blocks["output"]):
        h = _apply_block(torch.cat([h, skips.pop()], dim=1), emb, xf_out, sd, f"output_blocks.{i}", layers, hp)
    return _conv(_group_norm(h, sd, "out.0", swish=True), sd, "out.2")


# ---------------------------------------------------------------------------------------------
# GPT-2 format vocabulary files (encoder.json + vocab.bpe), trained here on a tiny corpus
# ---------------------------------------------------------------------------------------------

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, in GPT-2's id order (printable bytes as themselves,
    then the others as chr(256 + n))."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(rest)}}


def train_tiny_gpt2_vocab(corpus: list[str], n_merges: int) -> tuple[dict, list[tuple[str, str]]]:
    """Greedy byte-level BPE training: (encoder {symbol: id}, ranked merges); "<|endoftext|>" last."""
    import regex

    by_byte = gpt2_byte_symbols()
    words = []
    for line in corpus:
        for piece in regex.findall(GPT2_SPLIT, line.lower()):
            words.append([by_byte[b] for b in piece.encode("utf-8")])
    merges = []
    for _ in range(n_merges):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    vocab = list(by_byte.values()) + ["".join(m) for m in merges] + ["<|endoftext|>"]
    return {s: i for i, s in enumerate(vocab)}, merges


TINY_CORPUS = ["a red cube on a blue background", "a green sphere next to a red cube",
               "two blue cubes and a yellow sphere", "the red sphere is above the green cube"]


def write_tiny_gpt2_vocab(folder, n_merges: int = 40, gzipped: bool = False):
    """Write encoder.json and vocab.bpe (optionally .gz) into `folder`; returns (encoder_path, bpe_path, encoder, merges)."""
    import gzip
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder, merges = train_tiny_gpt2_vocab(TINY_CORPUS, n_merges)
    enc_text = json.dumps(encoder).encode("utf-8")
    bpe_text = ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8")
    suffix = ".gz" if gzipped else ""
    enc_path, bpe_path = folder / f"encoder.json{suffix}", folder / f"vocab.bpe{suffix}"
    enc_path.write_bytes(gzip.compress(enc_text) if gzipped else enc_text)
    bpe_path.write_bytes(gzip.compress(bpe_text) if gzipped else bpe_text)
    return enc_path, bpe_path, encoder, merges
