"""Training checkpoints (to resume) and exports (to sample).

Checkpoint = what resuming needs, written by every rank into its own local folder and handed to
Ray Train (`ray.train.report(checkpoint=...)`), which merges the ranks' files into
RUN/checkpoints/step-NNNNNNN/ (names never collide: each rank's files carry its rank):

    ds/...                        DeepSpeed: weights, optimizer (ZeRO partitions), loss scaler, lr schedule
    ema-rank{r}.safetensors       rank r's EMA (whole tensors; under ZeRO-3 its partition)
    state-rank{r}.json            step, data position, images seen
    manifest-rank{r}.json         sha256 and size of every file rank r wrote; written last
    complete.json                 rank 0, after every rank's files arrived (`mark_complete`)

Verification reads every byte, and a checkpoint of the paper's 3.5B model with Adam state is
~56 GB, so each file is hashed once per resume, before anything is unpickled by DeepSpeed:
- the driver (`inspect_checkpoint`) parses the manifests and checks every file's size (a stat
  each), and hashes only state-rank0.json, which it reads for the resume step and data position;
- each rank hashes the files its own manifest lists (`verify_rank_files`: its ZeRO partitions,
  its EMA and state; rank 0 also the model states every rank loads) and one all-gather shares
  the outcome, so no rank loads a byte before every file has been checked, and a damaged file
  is the same one-line UserError naming it on every rank.
Export = the consolidated EMA and raw weights in training.checkpoint's format at
RUN/exports/step-NNNNNNN/ (what `glide sample --model RUN` loads).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from shards import UserError, file_digest, write_json_atomic

DS_TAG = "ds"
CHECKPOINTS_DIR = "checkpoints"  # Ray Train's run name inside RUN: RUN/checkpoints/step-N/
COMPLETE_MARKER = "complete.json"
_MANIFEST = re.compile(r"^manifest-rank(\d+)\.json$")
# Written by DeepSpeed but never read by a resume (the tag is given; the scripts are for people):
# their sizes are checked, their bytes not hashed.
NOT_LOADED = frozenset({"latest", "zero_to_fp32.py", "zero_to_torch.py"})


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def manifest_name(rank: int) -> str:
    return f"manifest-rank{rank}.json"


def state_name(rank: int) -> str:
    return f"state-rank{rank}.json"


# ---------------------------------------------------------------------------------------------
# writing (every rank, collective)
# ---------------------------------------------------------------------------------------------
def save_training_checkpoint(directory: Path, engine, ema, state: dict, rank: int, world_size: int) -> None:
    """Write this rank's part of the checkpoint into `directory` (a fresh folder local to this rank,
    handed whole to Ray Train afterwards: plain writes inside it, the manifest last)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=DS_TAG)
    save_file(ema.local_state_dict(), str(directory / f"ema-rank{rank}.safetensors"))
    (directory / state_name(rank)).write_text(json.dumps(state, indent=2) + "\n")
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if not _MANIFEST.match(rel):
            digest = file_digest(path)
            files[rel] = {"sha256": digest.sha256, "bytes": digest.bytes}
    manifest = {"format": "glide-train-checkpoint", "step": state["step"], "rank": rank,
                "world_size": world_size, "files": files}
    (directory / manifest_name(rank)).write_text(json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# verifying and reading
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointListing:
    """What a checkpoint's manifests say: step, world size and each rank's files {rel: {sha256, bytes}}."""

    directory: Path
    step: int
    world_size: int
    files_by_rank: dict

    def loaded_files(self, rank: int) -> list[str]:
        """The files rank `rank` wrote that a resume reads (and so must hash)."""
        return [rel for rel in self.files_by_rank[rank] if rel not in NOT_LOADED]


def read_rank_manifest(directory: str | os.PathLike, rank: int) -> dict:
    """manifest-rank{rank}.json, parsed and checked; UserError naming it."""
    path = Path(directory) / manifest_name(rank)
    try:
        manifest = json.loads(path.read_text())
        manifest["step"], manifest["world_size"] = int(manifest["step"]), int(manifest["world_size"])
        if not isinstance(manifest["files"], dict):
            raise TypeError("'files' is not a mapping")
    except FileNotFoundError:
        raise UserError(f"{path}: missing from checkpoint") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable checkpoint manifest ({e})") from None
    return manifest


def read_checkpoint_listing(directory: str | os.PathLike) -> CheckpointListing:
    """Every rank's manifest (no file data is read); UserError if one is missing, unreadable or disagrees."""
    directory = Path(directory)
    ranks = sorted(int(m.group(1)) for p in directory.glob("manifest-rank*.json") if (m := _MANIFEST.match(p.name)))
    if not ranks:
        raise UserError(f"{directory}: not a training checkpoint (no manifest-rank*.json)")
    manifests = {rank: read_rank_manifest(directory, rank) for rank in ranks}
    steps = {m["step"] for m in manifests.values()}
    worlds = {m["world_size"] for m in manifests.values()}
    if len(steps) != 1 or len(worlds) != 1:
        raise UserError(f"{directory}: manifests disagree on step or world size ({sorted(steps)}, {sorted(worlds)})")
    world = worlds.pop()
    missing = sorted(set(range(world)) - set(ranks))
    if missing:
        raise UserError(f"{directory / manifest_name(missing[0])}: missing (checkpoint of {world} ranks)")
    return CheckpointListing(directory, steps.pop(), world, {r: m["files"] for r, m in manifests.items()})


def _check_file(directory: Path, rel: str, record: dict, rank: int, hash_it: bool) -> int:
    """Size (always) and sha256 (if `hash_it`) of one listed file; returns the bytes hashed."""
    path = directory / rel
    if not path.is_file():
        raise UserError(f"{path}: missing from checkpoint (listed in {manifest_name(rank)})")
    damaged = UserError(f"{path}: checkpoint file is damaged (size or sha256 differs from {manifest_name(rank)})")
    if path.stat().st_size != record.get("bytes"):
        raise damaged
    if not hash_it:
        return 0
    try:
        digest = file_digest(path)
    except OSError as e:
        raise UserError(f"{path}: unreadable checkpoint file ({e})") from None
    if digest.sha256 != record.get("sha256") or digest.bytes != record.get("bytes"):
        raise damaged
    return digest.bytes


def inspect_checkpoint(directory: str | os.PathLike) -> CheckpointListing:
    """The driver's check before it starts workers: manifests agree and every file has its size.

    Reads no file's contents: a truncated or missing file fails here in seconds, a flipped byte
    is found by the rank that loads the file (`verify_rank_files`).
    """
    listing = read_checkpoint_listing(directory)
    for rank, files in listing.files_by_rank.items():
        for rel, record in files.items():
            _check_file(listing.directory, rel, record, rank, hash_it=False)
    return listing


def read_verified_rank_state(listing: CheckpointListing, rank: int) -> dict:
    """state-rank{rank}.json after checking its sha256 against the manifest."""
    rel = state_name(rank)
    record = listing.files_by_rank[rank].get(rel)
    if record is None:
        raise UserError(f"{listing.directory / rel}: not listed in {manifest_name(rank)}")
    _check_file(listing.directory, rel, record, rank, hash_it=True)
    return read_rank_state(listing.directory, rank)


def verify_rank_files(directory: str | os.PathLike, rank: int, world_size: int,
                      verified: frozenset = frozenset()) -> list[dict]:
    """Collective: this rank hashes the loaded files its own manifest lists, minus `verified`
    (absolute paths already hashed in this run: the driver's state-rank0.json); then one
    all-gather. Returns every rank's {"files", "bytes", "seconds"}; raises the first rank's
    UserError on every rank if any file is damaged."""
    directory = Path(directory)
    start = time.perf_counter()
    outcome = {"error": None, "files": 0, "bytes": 0}
    try:
        manifest = read_rank_manifest(directory, rank)
        if manifest["world_size"] != world_size:
            raise UserError(f"{directory}: written by {manifest['world_size']} workers; resume with "
                            f"--workers {manifest['world_size']} (this run has {world_size})")
        for rel, record in manifest["files"].items():
            if rel in NOT_LOADED or str((directory / rel).resolve()) in verified:
                continue
            outcome["bytes"] += _check_file(directory, rel, record, rank, hash_it=True)
            outcome["files"] += 1
    except UserError as e:
        outcome["error"] = str(e)
    outcome["seconds"] = time.perf_counter() - start
    outcomes = _all_gather(outcome)
    errors = [o["error"] for o in outcomes if o["error"]]
    if errors:
        raise UserError(errors[0])
    return outcomes


def _all_gather(obj) -> list:
    """`obj` from every rank of the process group (just this one's outside a group)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def read_rank_state(directory: Path, rank: int) -> dict:
    path = Path(directory) / state_name(rank)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable training state ({e})") from None


def load_training_checkpoint(directory: Path, engine, ema, rank: int, world_size: int,
                             verified: frozenset = frozenset()) -> tuple[dict, list[dict]]:
    """Verify this rank's files (collective, see module doc), then restore engine (weights,
    optimizer, scaler, schedule), EMA and this rank's state. Returns (state, every rank's
    verification figures)."""
    from safetensors.torch import load_file

    outcomes = verify_rank_files(directory, rank, world_size, verified)
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
    return read_rank_state(directory, rank), outcomes


def mark_complete(directory: Path, step: int) -> None:
    """Rank 0, once every rank's files are in RUN/checkpoints/step-N: the folder is whole.

    A run killed while Ray Train copies a checkpoint leaves a folder without this marker, which
    resuming skips (an older complete checkpoint is used); a marked folder that fails
    verification is damaged, and an error.
    """
    write_json_atomic(str(Path(directory) / COMPLETE_MARKER), {"step": step})


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
