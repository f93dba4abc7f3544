"""`glide plan-memory`: ZeRO model-state figures agree with DeepSpeed's estimators; activations measured."""
from __future__ import annotations

import json

import pytest

from training.memory_plan import (
    HEADROOM, expected_deepspeed_gb, measure_model, model_state_bytes, plan_memory,
)
from training.model_config import load_model_config


@pytest.fixture(scope="module")
def paper_base():
    return measure_model(load_model_config("glide-paper-base"))


@pytest.fixture(scope="module")
def tiny():
    return measure_model(load_model_config("tiny"))


def test_paper_base_is_3_5b_and_states_agree_with_deepspeed_estimators(paper_base, tiny):
    assert 3.4e9 < paper_base.params < 3.7e9
    for sizes in (paper_base, tiny):
        for gpus in (1, 8, 64):
            plan = plan_memory(sizes, gpus=gpus, gpu_mem_gb=80)
            for stage in (2, 3):
                ours = plan["zero_stages"][str(stage)]["model_states_gb"]
                theirs = expected_deepspeed_gb(stage, sizes.params, sizes.largest_layer_params, gpus)
                assert ours == pytest.approx(theirs, abs=1e-3), (stage, gpus)


def test_model_states_follow_the_partitioning_rules(paper_base):
    P, L = paper_base.params, paper_base.largest_layer_params
    # one GPU, no partitioning: fp32 Adam is 16 bytes/param; mixed precision 16 + DeepSpeed's fp32 grads 4
    assert sum(model_state_bytes(0, P, L, 1, "fp32").values()) == pytest.approx(16 * P, rel=1e-9)
    assert sum(model_state_bytes(0, P, L, 1, "bf16").values()) == pytest.approx(20 * P, rel=1e-9)
    states = [sum(model_state_bytes(s, P, L, 8).values()) for s in range(4)]
    assert states == sorted(states, reverse=True) and states[3] < states[0] / 6
    # stage 1 only partitions optimizer state: weights and 16-bit gradients stay whole
    s1 = model_state_bytes(1, P, L, 8)
    assert s1["weights"] == 2 * P and s1["optimizer"] == int(12 * P / 8)


def test_activations_scale_with_batch_and_shrink_with_checkpointing(paper_base):
    a8 = plan_memory(paper_base, gpus=8, gpu_mem_gb=80, batch_size=8)["zero_stages"]["0"]["activations_gb"]
    a16 = plan_memory(paper_base, gpus=8, gpu_mem_gb=80, batch_size=16)["zero_stages"]["0"]["activations_gb"]
    ck = plan_memory(paper_base, gpus=8, gpu_mem_gb=80, batch_size=8,
                     activation_checkpointing=True)["zero_stages"]["0"]["activations_gb"]
    fp32 = plan_memory(paper_base, gpus=8, gpu_mem_gb=80, batch_size=8, precision="fp32")
    assert a16 == pytest.approx(2 * a8, abs=2e-3) and 0 < ck < a8 / 2
    assert fp32["zero_stages"]["0"]["activations_gb"] == pytest.approx(2 * a8, abs=2e-3)


def test_meta_activation_estimate_matches_a_real_cpu_forward(tiny):
    """Saved-for-backward bytes of a real forward of the tiny model (distinct storages) at batch 2 vs 1."""
    import torch

    from training.factory import create_model
    from training.model_info import example_inputs

    cfg = load_model_config("tiny")
    model = create_model(cfg, device="cpu").train()

    def saved(batch):
        seen, total = set(), [0]

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total[0] += s.nbytes()
            return t

        args, kwargs = example_inputs(model, cfg)
        args = tuple(a.repeat(batch, *[1] * (a.dim() - 1)) for a in args)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*args, **kwargs)
        del out
        return total[0]

    real = saved(2) - saved(1)
    assert tiny.activation_bytes_per_example == pytest.approx(real, rel=0.1)


def test_recommended_stage_is_the_lowest_that_fits(paper_base):
    plan = plan_memory(paper_base, gpus=8, gpu_mem_gb=40, batch_size=8)
    budget = 40 * (1 - HEADROOM)
    fitting = [int(s) for s, p in plan["zero_stages"].items() if p["total_gb"] <= budget]
    assert plan["recommended_stage"] == min(fitting)
    assert plan["recommended_stage"] > 0  # 3.5B params do not fit 40 GB unpartitioned
    none = plan_memory(paper_base, gpus=1, gpu_mem_gb=16, batch_size=8)
    assert none["recommended_stage"] is None


@pytest.mark.slow
def test_cli_json_is_exactly_the_documented_shape(glide):
    r = glide("plan-memory", "glide-paper-upsampler", "--gpus", "16", "--gpu-mem", "40",
              "--batch-size", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"zero_stages", "recommended_stage"}
    assert set(out["zero_stages"]) == {"0", "1", "2", "3"}
    for figures in out["zero_stages"].values():
        assert set(figures) == {"model_states_gb", "activations_gb", "total_gb"}
        assert figures["total_gb"] == pytest.approx(figures["model_states_gb"] + figures["activations_gb"], abs=2e-3)
    assert out["recommended_stage"] in (0, 1, 2, 3)


def test_cli_table_names_each_memory_part_and_the_recommendation(glide_cli, capsys):
    assert glide_cli("plan-memory", "tiny", "--gpus", "2", "--gpu-mem", "8", "--precision", "fp32") == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("weights", "grads", "optimizer", "activ."))
    assert "recommended: ZeRO stage 0" in out


def test_cli_unknown_config_is_a_one_line_error(glide_cli, capsys):
    assert glide_cli("plan-memory", "no-such-model", "--gpus", "2", "--gpu-mem", "24") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glide: error: no-such-model") and "\n" not in err
