"""`glide checkpoint import --from glide-text2im`: released-layout .pt files (random weights at a tiny
size, stored with the dtypes glide's convert_to_fp16 leaves, saved with torch.save as the released
files are) -> checkpoint folder -> training.load -> the same outputs as an independent float64
reference of glide-text2im's forward (tests/reference_glide.py)."""
import json

import pytest
import torch

import training
from shards import UserError
from reference_glide import (glide_param_shapes, random_released_state_dict, reference_forward,
                             write_tiny_gpt2_vocab)

SIZE, CTX = 16, 8


# (--kind as typed: glide's file kind or the model kind, ModelConfig kind, layout overrides): the
# released layout (scale-shift norm, resblock up/down, 16-channel heads), plus the older ADM layout
# (conv up/down, 2 heads) for the base model.
CASES = [
    ("base", "base", {}),
    ("upsample", "upsampler", {}),
    ("base-inpaint", "base-inpaint", {}),
    ("upsampler-inpaint", "upsampler-inpaint", {}),
    ("base", "base", {"use_scale_shift_norm": False, "resblock_updown": False, "num_head_channels": -1}),
]


def hyperparameters(model_kind, n_vocab, **overrides):
    """glide create_model arguments for a tiny model, and the matching ModelConfig dict."""
    cfg = dict(kind=model_kind, image_size=SIZE, num_channels=32, num_res_blocks=1, channel_mult="1,2",
               num_heads=2, num_head_channels=16, num_heads_upsample=-1, attention_resolutions="16,8",
               dropout=0.0, text_ctx=CTX, xf_width=32, xf_layers=2, xf_heads=2, xf_final_ln=True,
               xf_padding=True, use_scale_shift_norm=True, resblock_updown=True, n_vocab=n_vocab,
               tokenizer={"type": "gpt2"})
    cfg.update(overrides)
    hp = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_ds=(SIZE // 16, SIZE // 8),
              num_heads=2, num_head_channels=cfg["num_head_channels"], num_heads_upsample=-1,
              use_scale_shift_norm=cfg["use_scale_shift_norm"], resblock_updown=cfg["resblock_updown"],
              text_ctx=CTX, xf_width=32, xf_layers=2, xf_heads=2, xf_final_ln=True, xf_padding=True,
              n_vocab=n_vocab, inpaint=model_kind.endswith("inpaint"), super_res=model_kind.startswith("upsampler"))
    return hp, cfg


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    enc, merges_file, encoder, _ = write_tiny_gpt2_vocab(tmp_path_factory.mktemp("bpe"), gzipped=True)
    return enc, merges_file, len(encoder)


def released_file(tmp_path, name, hp, legacy=False, seed=0):
    state = random_released_state_dict(hp, seed=seed)
    path = tmp_path / name
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path, state


def model_inputs(glide, hp, captions):
    g = torch.Generator().manual_seed(7)
    tokens, mask = glide.tokenizer.batch(captions, CTX)
    kw = {}
    if hp["super_res"]:
        kw["low_res"] = torch.randn(len(captions), 3, SIZE // 2, SIZE // 2, generator=g)
    if hp["inpaint"]:
        kw["inpaint_image"] = torch.randn(len(captions), 3, SIZE, SIZE, generator=g)
        kw["inpaint_mask"] = (torch.rand(len(captions), 1, SIZE, SIZE, generator=g) > 0.5).float()
    x = torch.randn(len(captions), 3, SIZE, SIZE, generator=g)
    return x, torch.tensor([0, 250, 999][:len(captions)]), tokens, mask, kw


@pytest.mark.parametrize("glide_kind,model_kind,overrides", CASES,
                         ids=["base", "upsample", "base-inpaint", "upsampler-inpaint", "base-adm-layout"])
def test_imported_model_computes_glides_outputs(tmp_path, bpe, glide_cli, capsys, glide_kind, model_kind, overrides):
    enc, merges_file, n_vocab = bpe
    hp, cfg = hyperparameters(model_kind, n_vocab, **overrides)
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(cfg))
    src, state = released_file(tmp_path, f"{glide_kind}.pt", hp, legacy=(glide_kind == "upsample"))
    assert {str(t.dtype) for t in state.values()} == {"torch.float16", "torch.float32"}
    dst = tmp_path / "imported"
    code = glide_cli("checkpoint", "import", "--from", "glide-text2im", "--kind", glide_kind, src, "-o", dst,
                     "--bpe", enc, merges_file, "--model-config", config_file)
    assert code == 0, capsys.readouterr().err

    meta = json.loads((dst / "config.json").read_text())
    assert meta["kind"] == model_kind and sorted(meta["files"]) == [
        "model.safetensors", "tokenizer/encoder.json", "tokenizer/vocab.bpe"]
    assert meta["extra"]["imported_from"][0]["stored_dtypes"]["float16"] > 0
    assert meta["extra"]["imported_from"][0]["kind"] == model_kind
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(dst / "model.safetensors").values()} == {torch.float32}

    glide = training.load(dst, device="cpu")
    assert set(glide.model.state_dict()) == set(glide_param_shapes(hp))
    x, t, tokens, mask, kw = model_inputs(glide, hp, ["a red cube and a blue sphere", "", "two green cubes"])
    assert not mask[1].any()  # the empty caption: all padding embedding
    with torch.no_grad():
        ours = glide.model(x, t, tokens=tokens, mask=mask, **kw)
    ref = reference_forward(state, hp, x, t, tokens, mask, **kw)
    scale = ref.abs().max().item()
    assert ours.dtype == torch.float32 and ours.shape == (3, 6, SIZE, SIZE)
    assert (ours.double() - ref).abs().max().item() <= 2e-5 * scale
    # the comparison is sharp: another caption moves the output far beyond that tolerance
    other = reference_forward(state, hp, x, t, tokens.roll(1, dims=0), mask.roll(1, dims=0), **kw)
    assert (other - ref).abs().max().item() > 1e-2 * scale


class NotATensor:
    """Anything a released state dict would never hold."""

    def __init__(self):
        self.payload = "arbitrary object"


def run_import(glide_cli, src, dst, *extra, kind="base"):
    return glide_cli("checkpoint", "import", "--from", "glide-text2im", "--kind", kind, src, "-o", dst, *extra)


def test_file_needing_more_than_tensors_is_refused(tmp_path, bpe, glide_cli, capsys):
    src = tmp_path / "base.pt"
    torch.save({"time_embed.0.weight": torch.zeros(2), "note": NotATensor()}, src)
    assert run_import(glide_cli, src, tmp_path / "out", "--bpe", bpe[0], bpe[1]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("glide: error:")]
    assert len(errors) == 1 and f"{src}: refused: holds more than tensors (it needs test_import_glide.NotATensor" in errors[0]
    assert not (tmp_path / "out").exists()


def test_mismatching_keys_are_reported_in_one_line_naming_src(tmp_path, bpe, glide_cli, capsys):
    enc, merges_file, n_vocab = bpe
    hp, cfg = hyperparameters("base", n_vocab)
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(cfg))
    state = random_released_state_dict(hp)
    del state["out.2.bias"]
    state["transformer_proj.weight"] = torch.zeros(5, 32)
    state["unemb.weight"] = torch.zeros(3)
    src = tmp_path / "base.pt"
    torch.save(state, src)
    assert run_import(glide_cli, src, tmp_path / "out", "--bpe", enc, merges_file, "--model-config", config_file) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"glide: error: {src}: does not fit the model config")
    assert "1 missing keys (out.2.bias)" in err and "1 unexpected keys (unemb.weight)" in err
    assert "transformer_proj.weight (5, 32) != (128, 32)" in err


def test_default_config_is_the_released_one(tmp_path, bpe, glide_cli, capsys):
    """Without --model-config a tiny file is checked against glide-filtered-base (and fails loudly)."""
    enc, merges_file, n_vocab = bpe
    hp, _ = hyperparameters("base", n_vocab)
    src, _ = released_file(tmp_path, "base.pt", hp)
    assert run_import(glide_cli, src, tmp_path / "out", "--bpe", enc, merges_file) == 2
    err = capsys.readouterr().err
    assert f"glide: error: {src}: does not fit the model config" in err
    assert "shape mismatches" in err and "positional_embedding (8, 32) != (128, 512)" in err


def test_vocabulary_must_be_given_and_match_the_model(tmp_path, bpe, glide_cli, capsys):
    enc, merges_file, n_vocab = bpe
    hp, cfg = hyperparameters("base", n_vocab + 1)
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(cfg))
    src, _ = released_file(tmp_path, "base.pt", hp)
    assert run_import(glide_cli, src, tmp_path / "out", "--model-config", config_file) == 2
    assert "pass --bpe ENCODER_JSON VOCAB_BPE" in capsys.readouterr().err
    assert run_import(glide_cli, src, tmp_path / "out", "--model-config", config_file, "--bpe", enc, merges_file) == 2
    assert f"vocabulary has {n_vocab} tokens but the model config expects n_vocab {n_vocab + 1}" in capsys.readouterr().err


def test_existing_destination_needs_force(tmp_path, bpe, glide_cli, capsys):
    enc, merges_file, n_vocab = bpe
    hp, cfg = hyperparameters("base", n_vocab)
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(cfg))
    src, _ = released_file(tmp_path, "base.pt", hp)
    args = ("--bpe", enc, merges_file, "--model-config", config_file)
    assert run_import(glide_cli, src, tmp_path / "out", *args) == 0
    assert run_import(glide_cli, src, tmp_path / "out", *args) == 2
    assert "already there (use --force" in capsys.readouterr().err
    assert run_import(glide_cli, src, tmp_path / "out", *args, "--force") == 0


def test_clip_towers_import_into_one_checkpoint(tmp_path, glide_cli, capsys):
    from test_noised_clip import imported_small_model  # released-layout towers, their engineer's fixture

    _, _, image_sd, text_sd = imported_small_model()
    torch.save(image_sd, tmp_path / "clip_image_enc.pt")
    torch.save(text_sd, tmp_path / "clip_text_enc.pt")
    dst = tmp_path / "clip"
    assert run_import(glide_cli, tmp_path / "clip_image_enc.pt", dst, kind="clip-image") == 0  # glide's name
    with pytest.raises(UserError, match="lacks its clip-text tower"):
        training.load(dst, device="cpu")
    assert run_import(glide_cli, tmp_path / "clip_text_enc.pt", dst, kind="clip-image") == 2
    assert f"{tmp_path / 'clip_text_enc.pt'}: holds the clip-text tower, not the clip-image" in capsys.readouterr().err
    assert run_import(glide_cli, tmp_path / "clip_text_enc.pt", dst, kind="clip") == 0, capsys.readouterr().err
    glide = training.load(dst, device="cpu")
    reference, _, _, _ = imported_small_model()
    for key, value in reference.state_dict().items():
        assert torch.equal(glide.model.state_dict()[key], value.float()), key
    meta = json.loads((dst / "config.json").read_text())
    assert [(p["file"], p["kind"], p["tower"]) for p in meta["extra"]["imported_from"]] == [
        ("clip_image_enc.pt", "clip", "clip-image"), ("clip_text_enc.pt", "clip", "clip-text")]
    # re-importing a tower replaces its provenance entry, also one an older import recorded as "kind"
    meta["extra"]["imported_from"][0] = {"file": "clip_image_enc.pt", "kind": "clip-image"}
    (dst / "config.json").write_text(json.dumps(meta))
    assert run_import(glide_cli, tmp_path / "clip_image_enc.pt", dst, kind="clip") == 0, capsys.readouterr().err
    meta = json.loads((dst / "config.json").read_text())
    assert [p["file"] for p in meta["extra"]["imported_from"]] == ["clip_text_enc.pt", "clip_image_enc.pt"]


RELEASED = [("glide-filtered-base", 64, 3, (1, 2, 3, 4), False, False),
            ("glide-filtered-upsampler", 256, 2, (1, 1, 2, 2, 4, 4), False, True),
            ("glide-filtered-base-inpaint", 64, 3, (1, 2, 3, 4), True, False),
            ("glide-filtered-upsampler-inpaint", 256, 2, (1, 1, 2, 2, 4, 4), True, True)]


@pytest.mark.parametrize("name,size,blocks,mult,inpaint,super_res", RELEASED, ids=[r[0] for r in RELEASED])
def test_released_configs_build_glides_exact_key_layout(name, size, blocks, mult, inpaint, super_res):
    """The import target of each released file has every key and shape glide-text2im's
    create_model(model_and_diffusion_defaults[_upsampler]()) gives (built on meta: no memory)."""
    from training.factory import create_model
    from training.model_config import load_model_config

    hp = dict(model_channels=192, num_res_blocks=blocks, channel_mult=mult,
              attention_ds=tuple(size // r for r in (32, 16, 8)), num_heads=1, num_head_channels=64,
              num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True, text_ctx=128,
              xf_width=512, xf_layers=16, xf_heads=8, xf_final_ln=True, xf_padding=True, n_vocab=50257,
              inpaint=inpaint, super_res=super_res)
    ours = {k: tuple(v.shape) for k, v in create_model(load_model_config(name), device="meta").state_dict().items()}
    assert ours == glide_param_shapes(hp)
    # what sum(p.numel() for p in model.parameters()) prints for glide-text2im's own models
    released_count = {"glide-filtered-base": 385_030_726, "glide-filtered-upsampler": 398_361_286}
    if name in released_count:
        assert sum(torch.Size(s).numel() for s in ours.values()) == released_count[name]
