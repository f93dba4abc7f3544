"""Checkpoint verification hashes each file once: a real 2-worker `glide train` from `--init`, resumed.

GLIDE_DIGEST_LOG makes every process (driver and Ray Train workers) log each file it hashes. At the
paper's 3.5B size a checkpoint with Adam state is ~56 GB, so a file hashed twice costs minutes:
- start from --init: the init's EMA weights (what workers load) are hashed once, model.safetensors
  (not loaded) never;
- resume: the driver hashes state-rank0.json (it reads the resume step there) and checks sizes;
  each rank hashes the files of its own manifest that a resume loads (ZeRO-1: its own optimizer
  partition), nothing twice, and the --init checkpoint is not read at all.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from conftest import run_glide

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CONFIG = "train:\n  random_crop: false\n  shuffle_buffer: 0\n  cfg_dropout: 0.0\n  batch_size: 4\n  log_every: 1\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from train_world import micro_config, write_world_shards

    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import load_model_config

    root = tmp_path_factory.mktemp("resume-verification")
    dataset = write_world_shards(root, count=32, rows_per_shard=16, image_size=32, repeat_first=True)
    (root / "train.yaml").write_text(CONFIG)
    model_cfg_path = micro_config(root / "micro-base.json")
    model = create_model(load_model_config(str(model_cfg_path)))
    init = save_checkpoint(root / "init", model, load_model_config(str(model_cfg_path)), step=0,
                           ema_state_dict=model.state_dict())
    return {"root": root, "dataset": dataset, "config": root / "train.yaml", "model": model_cfg_path, "init": init}


def train(setup, max_steps: int, log: Path):
    run = setup["root"] / "run"
    result = run_glide("train", "base", "--data", setup["dataset"], "--config", setup["config"], "-o", run,
                       "--model-config", setup["model"], "--init", setup["init"], "--workers", 2,
                       "--zero-stage", 1, "--precision", "fp32", "--max-steps", max_steps, "--save-every", 2,
                       env={"GLIDE_DIGEST_LOG": str(log)}, timeout=900)
    assert result.returncode == 0, result.stderr
    return run, result.stderr


def hashed(log: Path) -> list[tuple[int, str]]:
    return [(int(n), path) for n, path in (line.split("\t", 1) for line in log.read_text().splitlines())]


def test_start_from_init_and_resume_hash_every_file_once(setup):
    from training.trainer.checkpointing import NOT_LOADED, read_checkpoint_listing

    init = setup["init"]
    log1 = setup["root"] / "digests-start.log"
    run, _ = train(setup, 2, log1)
    first = hashed(log1)
    assert not [p for p, n in collections.Counter(p for _, p in first).items() if n > 1]
    init_paths = [p for _, p in first if p.startswith(f"{init}/")]
    assert init_paths == [str(init / "ema.safetensors")]  # verified once, by the driver

    log2 = setup["root"] / "digests-resume.log"
    run, stderr = train(setup, 3, log2)
    assert "resuming at step 2" in stderr
    second = hashed(log2)
    twice = [p for p, n in collections.Counter(p for _, p in second).items() if n > 1]
    assert twice == [], f"hashed more than once in one run: {twice}"
    assert not [p for _, p in second if p.startswith(f"{init}/")]  # a resume does not load --init

    ckpt = run / "checkpoints" / "step-0000002"
    listing = read_checkpoint_listing(ckpt)
    owned = {r: {str(ckpt / rel) for rel in listing.loaded_files(r)} for r in (0, 1)}
    assert any("zero_pp_rank_1" in p for p in owned[1])  # ZeRO-1: rank 1's optimizer partition is its own
    verified = {p: n for n, p in second if p.startswith(f"{ckpt}/")}
    assert set(verified) == owned[0] | owned[1]
    helpers = {str(ckpt / rel) for rel in NOT_LOADED}  # DeepSpeed's tag pointer and scripts for people
    assert helpers <= {str(p) for p in ckpt.rglob("*")} and not helpers & set(verified)

    # what each rank reported hashing: its own files (rank 0's state file was the driver's)
    m = re.search(r"verified rank 0 (\d+) files ([\d.]+) MB, rank 1 (\d+) files ([\d.]+) MB", stderr)
    assert m, stderr
    driver = {str(ckpt / "state-rank0.json")}
    for rank, (files, mb) in enumerate([(m.group(1), m.group(2)), (m.group(3), m.group(4))]):
        mine = owned[rank] - driver
        assert int(files) == len(mine)
        assert float(mb) == pytest.approx(sum(verified[p] for p in mine) / 1e6, abs=0.05)

    size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    total = sum(verified.values())
    assert total <= size
    print(json.dumps({"checkpoint_bytes": size, "resume_verification_bytes": total,
                      "all_hashed_bytes_in_resumed_run": sum(n for n, _ in second)}))
