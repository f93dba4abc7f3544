"""Trainer pieces without Ray: config, learning-rate schedule, loss scaling, EMA, checkpoint checks."""
from __future__ import annotations

import json
import math
import os

import pytest

from shards import UserError


def test_train_section_validates_and_flags_override(tmp_path, glide_cli, capsys):
    from pipeline.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  kind: upsampler\n  lr: 0.002\n  model: {base: tiny, upsampler: up.json}\n")
    cfg = load_config(cfg_file)
    assert cfg.train.lr == 0.002 and cfg.train.model_name() == "up.json"
    assert cfg.train.model_kind == "upsampler"

    cfg_file.write_text("train:\n  max_steps: {base: 600, upsampler: 200}\n")
    train = load_config(cfg_file).train
    assert train.for_kind().max_steps == 600
    train.kind = "upsampler"
    assert train.for_kind().max_steps == 200

    # P2 weighting per kind (the demo weights the base only); kinds left out train uniformly
    cfg_file.write_text("train:\n  p2_gamma: {base: 1.5}\n")
    train = load_config(cfg_file).train
    assert train.for_kind().p2_gamma == 1.5
    train.kind = "upsampler"
    assert train.for_kind().p2_gamma == 0.0
    cfg_file.write_text("train:\n  p2_gamma: {bsae: 1.0}\n")
    with pytest.raises(UserError, match="p2_gamma: unknown kind 'bsae'"):
        load_config(cfg_file)

    cfg_file.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match="c.yaml: unknown config key 'train.learning_rate'"):
        load_config(cfg_file)

    # a flag beats the config: --precision fp16 on this CPU-only run is refused before Ray starts
    cfg_file.write_text("train:\n  precision: fp32\n")
    code = glide_cli("train", "base", "--data", tmp_path, "-o", tmp_path / "run", "--config", cfg_file,
                     "--precision", "fp16")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "glide: error: --precision fp16: DeepSpeed's fp16 training needs GPUs (this run is on CPU); "
        "use --precision bf16 or fp32"]


def test_bad_inputs_are_one_line_errors(tmp_path, glide_cli, capsys):
    assert glide_cli("train", "base", "--data", tmp_path / "missing", "-o", tmp_path / "run") == 2
    assert "missing: no such dataset folder" in capsys.readouterr().err
    assert glide_cli("train", "upsampler", "--data", tmp_path, "-o", tmp_path / "run") == 2
    assert "model kind 'base' cannot be trained as 'upsampler'" in capsys.readouterr().err
    assert glide_cli("train", "base", "--data", tmp_path, "-o", tmp_path / "run", "--init", tmp_path / "nope") == 2
    assert "nope: no such checkpoint or run folder" in capsys.readouterr().err


def test_learning_rate_warms_up_then_follows_the_schedule():
    from training.trainer.config import TrainConfig
    from training.trainer.engine import lr_multiplier

    cfg = TrainConfig(warmup_steps=4, lr_schedule="cosine", max_steps=104, min_lr_ratio=0.1)
    assert [lr_multiplier(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, cfg) == pytest.approx(1.0)
    assert lr_multiplier(54, cfg) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_multiplier(104, cfg) == pytest.approx(0.1)
    assert lr_multiplier(10, TrainConfig(lr_schedule="constant")) == 1.0
    assert lr_multiplier(52, TrainConfig(lr_schedule="linear", max_steps=102, warmup_steps=2)) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def one_rank_deepspeed():
    """DeepSpeed's communication on a one-process gloo group (what the loss scaler logs through)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from training.trainer.engine import init_distributed

    init_distributed()


def test_dynamic_loss_scaler_halves_on_overflow_and_grows_when_steady(one_rank_deepspeed):
    """fp16 training's loss scaler, as the engine config asks for it (dynamic, window 1000 -> 4 here)."""
    import torch
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

    from training.trainer.config import TrainConfig
    from training.trainer.engine import deepspeed_config

    fp16 = deepspeed_config(TrainConfig(precision="fp16"))["fp16"]
    assert fp16["enabled"] and fp16["loss_scale"] == 0  # 0 = dynamic
    scaler = DynamicLossScaler(init_scale=2.0 ** fp16["initial_scale_power"], scale_window=4, min_scale=1,
                               delayed_shift=1, consecutive_hysteresis=False)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    overflow = not bool(torch.isfinite(p.grad).all())  # what the fp16 optimizer checks before stepping
    assert overflow
    scaler.update_scale(overflow)
    assert scaler.cur_scale == 2.0 ** 15  # overflow: halved (and the step is skipped)
    assert scaler.scale_loss(torch.tensor(2.0)) == 2.0 ** 16  # the loss is multiplied by the scale
    for _ in range(4):
        scaler.update_scale(False)
    assert scaler.cur_scale == 2.0 ** 15  # not yet a full window of clean steps after the overflow
    scaler.update_scale(False)
    assert scaler.cur_scale == 2.0 ** 16  # a window of 4 clean steps: doubled again


def test_ema_follows_the_weights_and_round_trips(one_rank_deepspeed):
    import torch

    from training.trainer.ema import ParameterEMA

    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = ParameterEMA(layer, rate=0.75)
    with torch.no_grad():
        layer.weight.fill_(4.0)
    ema.update()
    ema.update()
    # 0 -> 0.25 * 4 = 1 -> 1 + 0.25 * (4 - 1) = 1.75
    assert torch.allclose(ema.full_state_dict()["weight"], torch.full((2, 2), 1.75))
    # warm-up: early steps follow the weights closely, later ones use the configured rate
    assert ema.decay(1) == pytest.approx(2 / 11) and ema.decay(1000) == 0.75
    other = ParameterEMA(layer, rate=0.75)
    other.load_local_state_dict(ema.local_state_dict(), "test")
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(UserError, match="ema.safetensors: EMA state lacks parameter 'bias'"):
        other.load_local_state_dict({"weight": torch.zeros(2, 2)}, "ema.safetensors")


def _fake_checkpoint(root, files_by_rank: dict):
    """A step-4 training checkpoint of len(files_by_rank) ranks: {rank: {relative path: bytes}}."""
    import hashlib

    ckpt = root / "step-0000004"
    for rank, files in files_by_rank.items():
        listed = {}
        for rel, data in files.items():
            (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
            (ckpt / rel).write_bytes(data)
            listed[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (ckpt / f"manifest-rank{rank}.json").write_text(json.dumps(
            {"step": 4, "rank": rank, "world_size": len(files_by_rank), "files": listed}))
    return ckpt


def _hashed(log) -> list[str]:
    return [line.split("\t", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def test_checkpoint_is_hashed_once_split_between_driver_and_ranks(tmp_path, monkeypatch):
    from training.trainer.checkpointing import inspect_checkpoint, read_verified_rank_state, verify_rank_files

    ckpt = _fake_checkpoint(tmp_path, {
        0: {"ds/mp_rank_00_model_states.pt": b"weights", "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt": b"adam0",
            "ema-rank0.safetensors": b"ema0", "state-rank0.json": b'{"step": 4}', "latest": b"ds",
            "zero_to_fp32.py": b"# script"},
        1: {"ds/zero_pp_rank_1_mp_rank_00_optim_states.pt": b"adam1", "ema-rank1.safetensors": b"ema1",
            "state-rank1.json": b'{"step": 4}'}})
    log = tmp_path / "digests.log"
    monkeypatch.setenv("GLIDE_DIGEST_LOG", str(log))

    listing = inspect_checkpoint(ckpt)  # the driver: manifests and sizes, no contents
    assert (listing.step, listing.world_size) == (4, 2) and _hashed(log) == []
    assert read_verified_rank_state(listing, 0) == {"step": 4}  # ... and the state it reads
    state0 = str(ckpt / "state-rank0.json")
    assert _hashed(log) == [state0]

    # each rank hashes what its own manifest lists and a resume loads, nothing the driver hashed
    outcome = verify_rank_files(ckpt, 1, 2)
    assert outcome == [{"error": None, "files": 3, "bytes": 20, "seconds": outcome[0]["seconds"]}]
    rank1 = sorted(str(ckpt / rel) for rel in listing.files_by_rank[1])
    assert sorted(_hashed(log)[1:]) == rank1
    verify_rank_files(ckpt, 0, 2, frozenset({str((ckpt / "state-rank0.json").resolve())}))
    rank0 = sorted(str(ckpt / rel) for rel in ("ds/mp_rank_00_model_states.pt", "ema-rank0.safetensors",
                                               "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    assert sorted(_hashed(log)[4:]) == rank0
    assert len(set(_hashed(log))) == len(_hashed(log)) == 7

    # a flipped byte: the size still fits (the driver passes), the rank that loads it names it
    victim = ckpt / "ema-rank1.safetensors"
    victim.write_bytes(b"emaX")
    inspect_checkpoint(ckpt)
    with pytest.raises(UserError, match=r"ema-rank1.safetensors: checkpoint file is damaged \(size or sha256 "
                                        r"differs from manifest-rank1.json\)"):
        verify_rank_files(ckpt, 1, 2)
    victim.write_bytes(b"em")  # truncated: the driver finds it without reading it
    with pytest.raises(UserError, match=r"ema-rank1.safetensors: checkpoint file is damaged"):
        inspect_checkpoint(ckpt)
    victim.unlink()
    with pytest.raises(UserError, match=r"ema-rank1.safetensors: missing from checkpoint \(listed in manifest-rank1"):
        inspect_checkpoint(ckpt)
    with pytest.raises(UserError, match="written by 2 workers; resume with --workers 2 \\(this run has 3\\)"):
        verify_rank_files(ckpt, 0, 3)
    (ckpt / "manifest-rank1.json").unlink()
    with pytest.raises(UserError, match=r"manifest-rank1.json: missing \(checkpoint of 2 ranks\)"):
        inspect_checkpoint(ckpt)
    (ckpt / "manifest-rank0.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest-rank0.json: unreadable checkpoint manifest"):
        inspect_checkpoint(ckpt)


def test_driver_console_is_one_progress_reporter_with_metric_lines():
    import io
    import queue

    from training.trainer.metrics import DriverProgress

    records = queue.Queue()
    for step in (3, 4, 5, 6):
        records.put({"step": step, "loss": 0.5, "images_per_s": 12.5})
    records.put({"event": "saved step 6: RUN/exports/step-0000006"})
    stream = io.StringIO()  # not a terminal: plain lines
    progress = DriverProgress(records, max_steps=6, start_step=2, stream=stream, interval=0.0).start()
    progress.stop()  # drains what is still queued, then prints the final line
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("train: step 3/6  loss 0.5000") and "train: saved step 6" in lines[-2]
    assert [line.split(" steps")[0] for line in lines if " steps (" in line] == [
        "train: 3/6", "train: 4/6", "train: 5/6", "train: 6/6", "train: 6/6"]
    assert "elapsed, loss 0.5000, img/s 12.5" in lines[-1]


def test_device_peak_and_progress_line():
    from training.trainer.metrics import device_peak_tflops, format_progress

    assert device_peak_tflops("cuda", "bf16", override=312.0) == 312.0
    cpu = device_peak_tflops("cpu", "fp32")
    assert cpu is None or 0 < cpu < 100
    line = format_progress({"step": 3, "loss": 0.5, "loss_q0": 0.9, "loss_q1": 0.5, "loss_q2": 0.3,
                            "loss_q3": 0.2, "grad_norm": 1.5, "lr": 1e-3, "loss_scale": 1.0,
                            "images_per_s": 12.5, "mfu": 0.031}, max_steps=10)
    assert line == ("train: step 3/10  loss 0.5000  q0-3 0.900/0.500/0.300/0.200  grad 1.5  lr 1.00e-03  "
                    "scale 1  12.5 img/s  MFU 3.10%")
    assert not math.isnan(cpu or 0.0)


def test_clip_captions_are_sometimes_one_of_their_clauses_decided_per_epoch_and_row():
    from training.data.batches import training_caption
    from training.data.task import TrainTask
    from training.trainer.config import TrainConfig
    from training.trainer.model_setup import train_task
    from training.model_config import load_model_config

    caption = "a red circle on a blue background, with a knife"
    task = TrainTask(kind="clip", image_size=16, text_ctx=16, cfg_dropout=0.0, caption_clauses=0.8, seed=3)
    got = [training_caption(task, 0, f"{i:032x}", caption) for i in range(4000)]
    assert got == [training_caption(task, 0, f"{i:032x}", caption) for i in range(4000)]  # deterministic
    share = {c: got.count(c) / len(got) for c in set(got)}
    assert set(share) == {caption, "a red circle on a blue background", "with a knife"}
    assert abs(share[caption] - 0.2) < 0.03 and abs(share["with a knife"] - 0.4) < 0.03
    assert [training_caption(task, 1, f"{i:032x}", caption) for i in range(50)] != got[:50]  # another epoch
    assert training_caption(task, 0, "0" * 32, "a red circle on a blue background") == \
        "a red circle on a blue background"  # one clause: as it is
    listed = "a red circle on a blue background, with a person and a knife"
    assert {training_caption(task, 0, f"{i:032x}", listed) for i in range(400)} == \
        {listed, "a red circle on a blue background", "with a person", "with a knife"}
    off = TrainTask(kind="clip", image_size=16, text_ctx=16, cfg_dropout=0.0, seed=3)
    assert {training_caption(off, 0, f"{i:032x}", caption) for i in range(200)} == {caption}
    # a config key for the CLIP only: the diffusion models keep their captions whole
    cfg = TrainConfig(kind="base", caption_clauses=0.8)
    assert train_task(cfg, load_model_config("tiny")).caption_clauses == 0.0
    assert train_task(cfg.model_copy(update={"kind": "clip"}), load_model_config("tiny-clip")).caption_clauses == 0.8
    with pytest.raises(UserError, match="caption_clauses 1.5 is not in"):
        TrainTask(kind="clip", caption_clauses=1.5)


def test_a_relative_init_path_reaches_the_workers_absolute(tmp_path, monkeypatch):
    """Ray Train workers run in their own folders: `--init checkpoints/x` must mean the caller's."""
    from conftest import save_tiny_checkpoint
    from training.trainer.config import TrainConfig
    from training.trainer.launcher import prepare_run

    save_tiny_checkpoint(tmp_path / "ckpt" / "base")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    run = prepare_run(TrainConfig(kind="base", data="data", output="run", init="ckpt/base"))
    assert run["init"] == str(tmp_path / "ckpt" / "base")
    assert run["tokenizer_dir"] is None or os.path.isabs(run["tokenizer_dir"])
