"""`glide model info`: parameter counts and FLOPs on the meta device."""
from __future__ import annotations

import json
import time

import pytest
import torch

from training.factory import create_model
from training.model_config import load_model_config
from training.model_info import model_info




def test_tiny_counts_match_a_real_model_and_split_into_visual_and_text():
    cfg = load_model_config("tiny")
    info = model_info(cfg)
    real = create_model(cfg, "cpu")
    assert info.total == sum(p.numel() for p in real.parameters())
    assert info.visual + info.text == info.total
    text = (sum(p.numel() for p in real.transformer.parameters()) + real.token_embedding.weight.numel()
            + real.positional_embedding.numel() + real.padding_embedding.numel()
            + sum(p.numel() for p in real.final_ln.parameters())
            + sum(p.numel() for p in real.transformer_proj.parameters()))
    assert info.text == text


def test_flops_count_the_text_transformer_and_the_first_conv():
    cfg = load_model_config("tiny")
    info = model_info(cfg)
    # the text transformer alone: per layer 2 * L * (12 W^2) for the linears (c_qkv, c_proj, mlp)
    L, W = cfg.text_ctx, cfg.xf_width
    text_linears = cfg.xf_layers * 2 * L * 12 * W * W
    assert info.flops_by_op["aten.addmm"] >= text_linears
    # the first conv alone: 2 * H * W * C_out * C_in * 9
    first_conv = 2 * 32 * 32 * 32 * 3 * 9
    assert info.flops_by_op["aten.convolution"] > first_conv
    assert info.flops_per_image == sum(info.flops_by_op.values())
    # inpainting adds exactly 4 first-conv input channels' worth of FLOPs
    inp = model_info(cfg.replace(kind="base-inpaint", inpaint=None))
    assert inp.flops_per_image - info.flops_per_image == 2 * 32 * 32 * 32 * 4 * 9


def test_paper_base_info_takes_seconds_and_no_memory():
    start = time.perf_counter()
    info = model_info(load_model_config("glide-paper-base"))
    assert time.perf_counter() - start < 20
    assert 3.4e9 < info.total < 3.6e9 and info.text > 1.2e9
    assert 1e12 < info.flops_per_image < 4e12


def test_model_info_cli_json(glide_cli, capsys):
    assert glide_cli("model", "info", "glide-filtered-base", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params", "flops_per_image"} and set(out["params"]) == {"total", "visual", "text"}
    assert out["params"]["total"] == 385_030_726
    assert out["params"]["visual"] + out["params"]["text"] == out["params"]["total"]


def test_model_info_cli_table_and_checkpoint_folder(glide_cli, capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": load_model_config("tiny").to_dict()}))
    assert glide_cli("model", "info", tmp_path) == 0
    out = capsys.readouterr().out
    assert "params: total" in out and "FLOPs / image" in out and "3,063,622" in out


def test_model_info_cli_unknown_name_exits_2(glide_cli, capsys):
    assert glide_cli("model", "info", "no-such-model") == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "Traceback" not in err
