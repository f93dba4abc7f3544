"""Training checkpoints (to resume) and exports (to sample).

Checkpoint = what resuming needs, written by every rank into its own local folder and handed to
Ray Train (`ray.train.report(checkpoint=...)`), which merges the ranks' files into
RUN/checkpoints/step-NNNNNNN/ (names never collide: each rank's files carry its rank):

    ds/...                        DeepSpeed: weights, optimizer (ZeRO partitions), loss scaler, lr schedule
    ema-rank{r}.safetensors       rank r's EMA (whole tensors; under ZeRO-3 its partition)
    state-rank{r}.json            step, data position, images seen
    manifest-rank{r}.json         sha256 and size of every file rank r wrote; written last
    complete.json                 rank 0, after every rank's files arrived (`mark_complete`)

`verify_checkpoint` checks every manifest before anything is unpickled by DeepSpeed, so a damaged
checkpoint is a one-line UserError naming the file. Export = the consolidated EMA and raw weights
in training.checkpoint's format at RUN/exports/step-NNNNNNN/ (what `glide sample --model RUN` loads).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from shards import UserError
from training.checkpoint import sha256_file

DS_TAG = "ds"
CHECKPOINTS_DIR = "checkpoints"  # Ray Train's run name inside RUN: RUN/checkpoints/step-N/
COMPLETE_MARKER = "complete.json"
_MANIFEST = re.compile(r"^manifest-rank(\d+)\.json$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# ---------------------------------------------------------------------------------------------
# writing (every rank, collective)
# ---------------------------------------------------------------------------------------------
def save_training_checkpoint(directory: Path, engine, ema, state: dict, rank: int, world_size: int) -> None:
    """Write this rank's part of the checkpoint into `directory` (a folder local to this rank)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=DS_TAG)
    save_file(ema.local_state_dict(), str(directory / f"ema-rank{rank}.safetensors"))
    (directory / f"state-rank{rank}.json").write_text(json.dumps(state, indent=2) + "\n")
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if not _MANIFEST.match(rel):
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": "glide-train-checkpoint", "step": state["step"], "rank": rank,
                "world_size": world_size, "files": files}
    (directory / f"manifest-rank{rank}.json").write_text(json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# verifying and reading
# ---------------------------------------------------------------------------------------------
def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Check every rank's manifest against the files; returns {"step", "world_size"}.

    Raises UserError naming the first missing, truncated or altered file.
    """
    directory = Path(directory)
    manifests = sorted((int(m.group(1)), p) for p in directory.glob("manifest-rank*.json")
                       if (m := _MANIFEST.match(p.name)))
    if not manifests:
        raise UserError(f"{directory}: not a training checkpoint (no manifest-rank*.json)")
    steps, worlds = set(), set()
    for rank, path in manifests:
        try:
            manifest = json.loads(path.read_text())
            files = manifest["files"]
            steps.add(int(manifest["step"]))
            worlds.add(int(manifest["world_size"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: unreadable checkpoint manifest ({e})") from None
        for rel, record in files.items():
            f = directory / rel
            if not f.is_file():
                raise UserError(f"{f}: missing from checkpoint (listed in {path.name})")
            if f.stat().st_size != record.get("bytes") or sha256_file(f) != record.get("sha256"):
                raise UserError(f"{f}: checkpoint file is damaged (size or sha256 differs from {path.name})")
    if len(steps) != 1 or len(worlds) != 1:
        raise UserError(f"{directory}: manifests disagree on step or world size ({sorted(steps)}, {sorted(worlds)})")
    world = worlds.pop()
    have = {rank for rank, _ in manifests}
    if have != set(range(world)):
        missing = min(set(range(world)) - have)
        raise UserError(f"{directory / f'manifest-rank{missing}.json'}: missing (checkpoint of {world} ranks)")
    return {"step": steps.pop(), "world_size": world}


def read_rank_state(directory: Path, rank: int) -> dict:
    path = Path(directory) / f"state-rank{rank}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable training state ({e})") from None


def load_training_checkpoint(directory: Path, engine, ema, rank: int, world_size: int) -> dict:
    """Restore engine (weights, optimizer, scaler, schedule), EMA and this rank's state; returns the state."""
    from safetensors.torch import load_file

    info = verify_checkpoint(directory)
    if info["world_size"] != world_size:
        raise UserError(f"{directory}: written by {info['world_size']} workers; resume with "
                        f"--workers {info['world_size']} (this run has {world_size})")
    load_path, _ = engine.load_checkpoint(str(directory), tag=DS_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise UserError(f"{directory / DS_TAG}: DeepSpeed could not load this checkpoint")
    ema_path = directory / f"ema-rank{rank}.safetensors"
    try:
        ema_state = load_file(str(ema_path))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(f"{ema_path}: unreadable EMA weights ({e})") from None
    ema.load_local_state_dict(ema_state, str(ema_path))
    return read_rank_state(directory, rank)


def mark_complete(directory: Path, step: int) -> None:
    """Rank 0, once every rank's files are in RUN/checkpoints/step-N: the folder is whole.

    A run killed while Ray Train copies a checkpoint leaves a folder without this marker, which
    resuming skips (an older complete checkpoint is used); a marked folder that fails
    verification is damaged, and an error.
    """
    (Path(directory) / COMPLETE_MARKER).write_text(json.dumps({"step": step}) + "\n")


def latest_checkpoint_dir(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete RUN/checkpoints/step-N folder (None if there is none)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    steps = [(int(p.name.split("-")[1]), p) for p in root.glob("step-*")
             if p.is_dir() and p.name.split("-")[1].isdigit() and (p / COMPLETE_MARKER).is_file()]
    return max(steps)[1] if steps else None


# ---------------------------------------------------------------------------------------------
# exports (consolidated safetensors for sampling)
# ---------------------------------------------------------------------------------------------
def full_fp32_weights(engine) -> dict:
    """Whole float32 weights on CPU, keyed like the module's state dict. Collective under ZeRO-1/2/3
    (fp32 master weights where DeepSpeed keeps them, else the parameters themselves)."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    from training.trainer.ema import gather_partition, is_partitioned

    module = engine.module
    use_master = engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled()
    params = dict(module.named_parameters())
    out = {}
    for name, p in params.items():
        value = safe_get_full_fp32_param(p) if use_master else None
        if value is None:
            value = gather_partition(p.ds_tensor, p) if is_partitioned(p) else p.data
        out[name] = value.detach().float().cpu().clone()
    for name, b in module.state_dict().items():  # buffers (persistent ones only)
        if name not in out:
            out[name] = b.detach().cpu().clone() if isinstance(b, torch.Tensor) else b
    return out


def export_weights(run_dir: str | os.PathLike, step: int, raw: dict, ema: dict, model_cfg, extra: dict,
                   tokenizer_dir: str | None = None) -> Path:
    """Write RUN/exports/step-NNNNNNN/ (training.checkpoint format; ema.safetensors preferred by load).

    tokenizer_dir: the checkpoint folder the run started from, whose tokenizer/ files (GPT-2
    vocabularies) the export carries along."""
    from training.checkpoint import EXPORTS_DIR, save_checkpoint

    ema_full = {k: ema.get(k, v) for k, v in raw.items()}
    target = Path(run_dir) / EXPORTS_DIR / step_dir_name(step)
    return save_checkpoint(target, raw, model_cfg, step=step, ema_state_dict=ema_full,
                           tokenizer_files=_tokenizer_files(model_cfg, tokenizer_dir), extra=extra)


def _tokenizer_files(model_cfg, tokenizer_dir: str | None) -> dict:
    """Vocabulary files: the start checkpoint's tokenizer/ folder and files the config names
    (CLIP's bundled vocabulary needs none)."""
    from training.checkpoint import TOKENIZER_DIR

    files = {}
    if tokenizer_dir and (Path(tokenizer_dir) / TOKENIZER_DIR).is_dir():
        for path in sorted((Path(tokenizer_dir) / TOKENIZER_DIR).iterdir()):
            if path.is_file():
                files[path.name] = str(path)
    for key, value in (model_cfg.tokenizer or {}).items():
        if key != "type" and isinstance(value, str) and Path(value).is_file():
            files[Path(value).name] = value
    return files
