"""Checkpoint folders: save/load round trips, EMA weights, verification failures as one-line
UserErrors naming the file, atomic replacement, run folders' latest export, training.load, and
`glide checkpoint info`."""
import json
import os
import subprocess
import sys

import pytest
import torch

import training
from conftest import randomized
from shards import UserError
from training.checkpoint import load_checkpoint, resolve_checkpoint_dir, save_checkpoint
from training.factory import create_model
from training.model_config import ModelConfig




def tiny_config(**overrides) -> ModelConfig:
    fields = dict(kind="base", image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="8", num_head_channels=16, dropout=0.0, text_ctx=8, xf_width=32,
                  xf_layers=1, xf_heads=2, n_vocab=49408, tokenizer={"type": "clip"})
    fields.update(overrides)
    return ModelConfig(**fields)


def randomized_model(cfg, seed=0):
    """A model with every parameter random (the zero-initialised output convs too)."""
    return randomized(create_model(cfg, device="cpu"), seed).eval()


def model_output(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    tokens = torch.randint(0, 49408, (2, 8), generator=g)
    mask = torch.tensor([[True] * 3 + [False] * 5, [True] * 8])
    with torch.no_grad():
        return model(x, torch.tensor([10, 900]), tokens=tokens, mask=mask)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = tiny_config()
    model = randomized_model(cfg)
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "base", model, cfg, step=1234, ema_state_dict=ema,
                           extra={"run": "unit-test"})
    return {"path": path, "cfg": cfg, "model": model, "ema": ema}


def test_save_writes_safetensors_and_config_with_sha256(saved):
    path = saved["path"]
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "ema.safetensors", "model.safetensors"]
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "glide-checkpoint" and meta["version"] == 1
    assert meta["step"] == 1234 and meta["kind"] == "base" and meta["extra"] == {"run": "unit-test"}
    assert meta["model"] == saved["cfg"].to_dict()
    assert meta["parameters"] == sum(p.numel() for p in saved["model"].parameters())
    import hashlib

    for name in ("model.safetensors", "ema.safetensors"):
        assert meta["files"][name]["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_load_round_trip_computes_the_same_outputs(saved):
    loaded = load_checkpoint(saved["path"], use_ema=False, device="cpu")
    assert loaded.step == 1234 and loaded.weights_file == "model.safetensors"
    assert not loaded.model.training
    assert torch.equal(model_output(loaded.model), model_output(saved["model"]))


def test_load_prefers_ema_weights(saved):
    loaded = load_checkpoint(saved["path"], device="cpu")
    assert loaded.weights_file == "ema.safetensors"
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, saved["ema"][k])
    half = load_checkpoint(saved["path"], use_ema=False, device="cpu", dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16


def test_training_load_gives_model_diffusion_tokenizer_and_config(saved):
    glide = training.load(saved["path"], timestep_respacing="10")
    assert glide.model.training is False
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert glide.device.type == expected
    assert glide.config.text_ctx == 8 and glide.step == 1234
    assert glide.diffusion.num_timesteps == 10
    tokens, mask = glide.tokenizer.batch(["a red cube", ""], glide.config.text_ctx)
    with torch.no_grad():
        out = glide.model(torch.zeros(2, 3, 16, 16, device=glide.device), torch.tensor([3, 7], device=glide.device),
                          tokens=tokens.to(glide.device), mask=mask.to(glide.device))
    assert out.shape == (2, 6, 16, 16) and torch.isfinite(out).all()


def test_import_training_stays_light():
    code = "import sys, training; assert callable(training.__getattr__); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _break_missing_file(path):
    os.remove(path / "model.safetensors")
    return "model.safetensors: missing"


def _break_json(path):
    (path / "config.json").write_text('{"format": "glide-checkpoint", ')
    return "config.json: not valid JSON"


def _break_sha(path):
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    return "model.safetensors: sha256 mismatch"


@pytest.mark.parametrize("breaker", [_break_missing_file, _break_json, _break_sha])
def test_damaged_checkpoint_is_a_user_error_naming_the_file(saved, tmp_path, breaker):
    path = _copy(saved["path"], tmp_path / "copy")
    expected = breaker(path)
    with pytest.raises(UserError, match=expected) as info:
        load_checkpoint(path, use_ema=False, device="cpu")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("change,expected", [
    (lambda sd: sd.pop("out.2.bias"), "1 missing keys \\(out.2.bias\\)"),
    (lambda sd: sd.__setitem__("stray.weight", torch.zeros(2)), "1 unexpected keys \\(stray.weight\\)"),
    (lambda sd: sd.__setitem__("out.2.bias", torch.zeros(7)), "1 shape mismatches \\(out.2.bias \\(7,\\) != \\(6,\\)\\)"),
])
def test_weights_that_do_not_fit_the_config_are_refused(saved, tmp_path, change, expected):
    state = dict(saved["model"].state_dict())
    change(state)
    path = save_checkpoint(tmp_path / "odd", state, saved["cfg"])
    with pytest.raises(UserError, match=f"model.safetensors: does not fit the model config: {expected}"):
        load_checkpoint(path, device="cpu")


def test_save_replaces_a_checkpoint_atomically_and_refuses_other_folders(saved, tmp_path):
    cfg = saved["cfg"]
    target = save_checkpoint(tmp_path / "ck", saved["model"], cfg, step=1)
    save_checkpoint(target, saved["model"], cfg, step=2)
    assert json.loads((target / "config.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a checkpoint folder"):
        save_checkpoint(precious, saved["model"], cfg)
    with pytest.raises(FileNotFoundError):  # a failure half-way leaves nothing behind
        save_checkpoint(tmp_path / "half", saved["model"], cfg, tokenizer_files={"vocab.bpe": tmp_path / "nope"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "precious"]


def test_run_folder_resolves_to_its_latest_export(saved, tmp_path):
    run = tmp_path / "run"
    for step in (5, 20, 100):
        save_checkpoint(run / "exports" / f"step-{step}", saved["model"], saved["cfg"], step=step)
    (run / "exports" / ".step-200.tmp-1234").mkdir()  # an export being written is not an export
    assert resolve_checkpoint_dir(run) == run / "exports" / "step-100"
    assert training.load(run, device="cpu").step == 100
    with pytest.raises(UserError, match="run folder has no exports yet"):
        (tmp_path / "fresh" / "exports").mkdir(parents=True)
        training.load(tmp_path / "fresh")


def test_cli_info_reports_and_verifies(saved, tmp_path, glide_cli, capsys):
    assert glide_cli("checkpoint", "info", saved["path"]) == 0
    out = capsys.readouterr().out
    assert "step" in out and "1234" in out and "model.safetensors" in out and "ok" in out
    params = sum(p.numel() for p in saved["model"].parameters())
    assert f"{params:,}" in out
    path = _copy(saved["path"], tmp_path / "copy")
    _break_sha(path)
    assert glide_cli("checkpoint", "info", path) == 2
    captured = capsys.readouterr()
    assert "sha256 MISMATCH" in captured.out
    assert "verification failed for model.safetensors" in captured.err
