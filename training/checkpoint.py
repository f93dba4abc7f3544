"""Checkpoint folders: safetensors weights + a JSON config. No pickle, ever.

    DIR/config.json            {"format": "glide-checkpoint", "version": 1, "kind", "step", "created",
                                "parameters", "model": ModelConfig.to_dict(),
                                "files": {relative path: {"sha256", "bytes"}}, "extra": {...}}
    DIR/model.safetensors      the weights (state-dict keys as glide-text2im's)
    DIR/ema.safetensors        optional EMA weights (preferred by load_checkpoint(use_ema=True))
    DIR/tokenizer/...          optional vocabulary files (GPT-2: encoder.json, vocab.bpe)

`save_checkpoint` writes a sibling temp folder and renames it into place, so a folder that exists
is complete (a swap of a whole folder: shards.atomic_open covers single files only).
`load_checkpoint` verifies before it builds anything: a missing file, bad JSON, a sha256 mismatch,
missing/unexpected keys or a shape mismatch is a one-line UserError naming the file.
See docs/checkpoints.md.
"""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from shards import UserError, file_digest
from shards.files import temp_name

FORMAT = "glide-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
TOKENIZER_DIR = "tokenizer"
EXPORTS_DIR = "exports"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def save_checkpoint(directory: str | os.PathLike, model_or_state_dict, cfg, *, step: int | None = None,
                    ema_state_dict: Mapping | None = None, tokenizer_files: Mapping | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint folder atomically and return its path.

    model_or_state_dict: an nn.Module or a {name: tensor} state dict (any device/dtype; saved as is).
    cfg: a ModelConfig (or its dict). tokenizer_files: {name under tokenizer/: path or bytes};
    gzipped sources are stored unzipped unless the name ends in ".gz". An existing checkpoint
    folder at `directory` is replaced; any other existing non-empty folder is refused.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    state = _plain_state_dict(model_or_state_dict)
    if directory.exists() and not _replaceable(directory):
        raise UserError(f"{directory}: exists and is not a checkpoint folder; not overwriting it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_name(str(directory)))
    try:
        tmp.mkdir()
        files: dict[str, dict] = {}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        files[WEIGHTS_FILE] = _file_record(tmp / WEIGHTS_FILE)
        if ema_state_dict is not None:
            ema = _plain_state_dict(ema_state_dict)
            if set(ema) != set(state):
                raise ValueError("ema_state_dict has different keys from the model's state dict")
            save_file(ema, str(tmp / EMA_FILE), metadata={"format": "pt"})
            files[EMA_FILE] = _file_record(tmp / EMA_FILE)
        for name, source in (tokenizer_files or {}).items():
            rel = f"{TOKENIZER_DIR}/{name}"
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
            if data[:2] == b"\x1f\x8b" and not name.endswith(".gz"):
                data = gzip.decompress(data)
            dest.write_bytes(bytes(data))
            files[rel] = _file_record(dest)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "kind": cfg_dict.get("kind"),
            "step": None if step is None else int(step),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "parameters": sum(t.numel() for t in state.values()),
            "model": cfg_dict,
            "files": files,
            "extra": extra or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _fsync_and_share(tmp)
        _swap_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _plain_state_dict(model_or_state_dict) -> dict:
    """CPU, contiguous, detached tensors; tensors sharing storage are cloned (safetensors refuses them)."""
    import torch

    state = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    out, seen = {}, set()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) if t.numel() else None
        if key is not None and key in seen:
            t = t.clone()
        elif key is not None:
            seen.add(key)
        out[name] = t
    return out


def _replaceable(directory: Path) -> bool:
    return directory.is_dir() and ((directory / CONFIG_FILE).is_file() or not any(directory.iterdir()))


def _swap_into_place(tmp: Path, directory: Path) -> None:
    if not directory.exists():
        os.rename(tmp, directory)
        return
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(directory, old)
    try:
        os.rename(tmp, directory)
    except BaseException:
        os.rename(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_and_share(directory: Path) -> None:
    """Flush every file to disk; give all the same permissions (safetensors writes owner-only files)."""
    for path in directory.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _file_record(path: Path) -> dict:
    digest = file_digest(path)
    return {"sha256": digest.sha256, "bytes": digest.bytes}


# ---------------------------------------------------------------------------------------------
# finding and verifying
# ---------------------------------------------------------------------------------------------
def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint folder as given, or a training run folder's latest export (RUN/exports/step-N/)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    exports = path / EXPORTS_DIR
    if exports.is_dir():
        steps = [(int(m.group(1)), p) for p in exports.iterdir()
                 if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / CONFIG_FILE).is_file()]
        if not steps:
            raise UserError(f"{path}: run folder has no exports yet ({EXPORTS_DIR}/step-N/ with {CONFIG_FILE})")
        return max(steps)[1]
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint or run folder")
    raise UserError(f"{path}: not a checkpoint folder (no {CONFIG_FILE}) nor a run folder (no {EXPORTS_DIR}/)")


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    """Parse and check DIR/config.json (format, version, files table); UserError naming the file."""
    path = Path(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (not a checkpoint folder)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} config (key 'format' is {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise UserError(f"{path}: unsupported checkpoint version {meta.get('version')!r} (this code reads {VERSION})")
    files = meta.get("files")
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise UserError(f"{path}: key 'files' must list {WEIGHTS_FILE} with its sha256")
    for name, record in files.items():
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise UserError(f"{path}: key 'files.{name}' has no sha256")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path}: key 'files.{name}' is not a path inside the checkpoint")
    if not isinstance(meta.get("model"), dict):
        raise UserError(f"{path}: key 'model' (the model config) is missing")
    return meta


def verify_files(directory: str | os.PathLike, meta: dict, names=None) -> None:
    """Check that the listed files (default: all) exist with their recorded sha256."""
    directory = Path(directory)
    for name in names if names is not None else meta["files"]:
        file = directory / name
        record = meta["files"].get(name)
        if record is None:
            raise UserError(f"{file}: not listed in {directory / CONFIG_FILE}")
        if not file.is_file():
            raise UserError(f"{file}: missing")
        if file_digest(file).sha256 != record["sha256"]:
            raise UserError(f"{file}: sha256 mismatch (file changed or corrupted since it was saved)")


def model_config_of(directory: str | os.PathLike, meta: dict):
    from training.model_config import ModelConfig

    return ModelConfig.from_dict(meta["model"], source=f"{Path(directory) / CONFIG_FILE}: model")


def checkpoint_kind(directory: str | os.PathLike, meta: dict):
    """The ModelKind of a checkpoint, read from its saved model config (as every version stores it)."""
    from training.model_kind import parse_model_kind

    return parse_model_kind(meta["model"].get("kind", "base"), f"{Path(directory) / CONFIG_FILE}: model.kind")


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedCheckpoint:
    model: Any  # nn.Module, eval mode
    config: Any  # ModelConfig
    step: int | None
    path: Path
    meta: dict
    weights_file: str  # which file the weights came from (model.safetensors or ema.safetensors)


def weights_file_name(meta: dict, use_ema: bool = True) -> str:
    """The weights file a load reads: ema.safetensors when present and wanted, else model.safetensors."""
    return EMA_FILE if use_ema and EMA_FILE in meta["files"] else WEIGHTS_FILE


def load_state_dict(directory: str | os.PathLike, *, use_ema: bool = True,
                    verify: bool = True) -> tuple[dict, dict, str]:
    """Weights of a checkpoint: (state_dict on CPU, meta, weights file name).

    verify=False only where the caller verified that file already in this run (a training run's
    driver verifies `--init` once; its workers then load without hashing it again)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    name = weights_file_name(meta, use_ema)
    if verify:
        verify_files(directory, meta, [name])
    try:
        state = load_file(str(directory / name), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{directory / name}: not a readable safetensors file: {e}") from None
    return state, meta, name


def check_state_dict(expected: Mapping, state: Mapping, source: str) -> None:
    """One-line UserError naming `source` unless `state` has exactly `expected`'s keys and shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_some(shapes)})")
    if problems:
        raise UserError(f"{source}: does not fit the model config: {'; '.join(problems)}")


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint(directory: str | os.PathLike, *, use_ema: bool = True, device=None,
                    dtype=None) -> LoadedCheckpoint:
    """Verify and load a checkpoint folder (or a run folder's latest export) into its model.

    The model is built from the stored config by training.factory.create_model, receives the
    weights (EMA ones when present and use_ema), is cast to `dtype` if given (floating tensors
    only), moved to `device` (default: CUDA if present, else CPU) and put in eval mode.
    """
    import torch

    from training.factory import create_model

    directory = resolve_checkpoint_dir(directory)
    state, meta, name = load_state_dict(directory, use_ema=use_ema)
    cfg = model_config_of(directory, meta)
    if cfg.kind == "clip":
        from training.import_clip import missing_clip_half

        half = missing_clip_half(state)
        if half:
            raise UserError(f"{directory / name}: noised CLIP checkpoint lacks its {half} tower "
                            f"(import the other glide file into the same folder)")
    model = create_model(cfg, device="cpu")
    check_state_dict(model.state_dict(), state, str(directory / name))
    model.load_state_dict(state, strict=True)  # copies into the model's own (float32) parameters
    del state
    if dtype is not None:
        model.to(dtype=dtype)
    model.to(torch.device(device) if device is not None else default_device())
    model.eval()
    return LoadedCheckpoint(model=model, config=cfg, step=meta.get("step"), path=directory, meta=meta,
                            weights_file=name)


def checkpoint_info(directory: str | os.PathLike, *, verify: bool = True) -> dict:
    """Summary for `glide checkpoint info`: kind, step, parameter counts and the sha256 check."""
    from safetensors import safe_open

    directory = resolve_checkpoint_dir(directory)
    meta = read_checkpoint_meta(directory)
    info = {"path": str(directory), "kind": checkpoint_kind(directory, meta).value, "step": meta.get("step"),
            "created": meta.get("created"), "files": {}}
    for name, record in meta["files"].items():
        file = directory / name
        if not file.is_file():
            status = "missing"
        elif not verify:
            status = "not checked"
        else:
            status = "ok" if file_digest(file).sha256 == record["sha256"] else "sha256 MISMATCH"
        entry = {"bytes": record.get("bytes"), "sha256": status}
        if name.endswith(".safetensors") and file.is_file():
            try:
                with safe_open(str(file), framework="pt") as f:
                    shapes = [f.get_slice(k).get_shape() for k in f.keys()]
                    dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})
                entry["tensors"] = len(shapes)
                entry["parameters"] = sum(_prod(s) for s in shapes)
                entry["dtypes"] = dtypes
            except Exception as e:  # a damaged header is reported, not raised: this is a diagnosis tool
                entry["error"] = f"unreadable: {e}"
        info["files"][name] = entry
    info["ok"] = all(e["sha256"] in ("ok", "not checked") and "error" not in e for e in info["files"].values())
    info["extra"] = meta.get("extra", {})
    return info


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
