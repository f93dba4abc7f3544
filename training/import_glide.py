"""Import openai/glide-text2im's released checkpoint files into checkpoint folders.

    base.pt, upsample.pt, base_inpaint.pt, upsample_inpaint.pt   torch state dicts of Text2ImUNet
        and its variants, keys exactly as training.nn's (so conversion is a check plus a dtype cast)
    clip_image_enc.pt, clip_text_enc.pt   the noised CLIP's two towers (training.import_clip converts
        them; importing both into one folder joins them)

Files are read with torch.load(weights_only=True): a file that needs more of pickle than tensors is
refused. Whatever dtype a tensor is stored in (glide's convert_to_fp16() leaves torso convs, the
transformer's linears, token embedding and transformer_proj in float16), the checkpoint stores it as
float32, the dtype the model is built in; float16 -> float32 is exact. The GPT-2 vocabulary
(encoder.json + vocab.bpe, plain or gzipped) is stored in the checkpoint's tokenizer/.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import re
import sys
from pathlib import Path

from shards import UserError, file_digest
from training.model_kind import NAMES, ModelKind, parse_model_kind

# model kind -> the shipped config of the released file (training/model_configs/)
RELEASED_CONFIG = {
    ModelKind.BASE: "glide-filtered-base",
    ModelKind.UPSAMPLER: "glide-filtered-upsampler",
    ModelKind.BASE_INPAINT: "glide-filtered-base-inpaint",
    ModelKind.UPSAMPLER_INPAINT: "glide-filtered-upsampler-inpaint",
}
SOURCE_REPO = "openai/glide-text2im"


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def read_torch_state_dict(src: str | os.PathLike) -> dict:
    """A released .pt file as {name: tensor}, without unpickling anything but tensors."""
    import torch

    src = Path(src)
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    try:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it needs {found.group(1)}" if found else "it needs more than tensors"
        raise UserError(f"{src}: refused: holds more than tensors ({what}; only weights_only files are "
                        "loaded, pickle is never run)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{src}: not a readable torch checkpoint: {first}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{src}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(f"{src}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


def convert_glide_state_dict(state: dict, cfg, source: str) -> dict:
    """Check every key and shape against the model `cfg` builds; return float32 copies.

    Raises one UserError naming `source` that lists missing/unexpected keys and shape mismatches.
    """
    import torch

    from training.checkpoint import check_state_dict
    from training.factory import create_model

    expected = create_model(cfg, device="meta").state_dict()
    check_state_dict(expected, state, source)
    bad = [k for k, v in state.items() if not v.is_floating_point()]
    if bad:
        raise UserError(f"{source}: {len(bad)} non-float tensors (e.g. {bad[0]} {state[bad[0]].dtype})")
    return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


def find_bpe_files(bpe: tuple | list | None) -> tuple[Path, Path] | None:
    """(encoder.json, vocab.bpe) as given, else the ones an installed glide_text2im ships, else None."""
    if bpe:
        return Path(bpe[0]), Path(bpe[1])
    spec = importlib.util.find_spec("glide_text2im")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer"
        pair = folder / "encoder.json.gz", folder / "vocab.bpe.gz"
        if all(p.is_file() for p in pair):
            return pair
    return None


def _dtype_counts(state: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in state.values():
        name = str(t.dtype).replace("torch.", "")
        counts[name] = counts.get(name, 0) + 1
    return counts


def import_kind(kind: str | ModelKind) -> tuple[ModelKind, str | None]:
    """--kind -> (model kind, noised-CLIP tower or None).

    A ModelKind or an alias (glide's "upsample", "upsample-inpaint"); glide's "clip-image" and
    "clip-text" mean kind clip with that tower. For plain "clip" the tower is read from the file.
    """
    from training.import_clip import TOWERS

    if kind in TOWERS:
        return ModelKind.CLIP, str(kind)
    try:
        return parse_model_kind(kind, "--kind"), None
    except UserError:
        raise UserError(f"--kind: {kind!r} is not a model kind (one of: {', '.join(NAMES)}; glide's "
                        f"file kinds upsample, upsample-inpaint, {', '.join(TOWERS)} are accepted too)") from None


def import_glide_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, kind: str | ModelKind, *,
                            bpe=None, config=None, overwrite: bool = False, quiet: bool = False) -> Path:
    """Convert one released glide-text2im file into the checkpoint folder `dst`; returns dst.

    kind: the model kind (base, upsampler, base-inpaint, upsampler-inpaint, clip) or glide's name
    for the file (upsample, upsample-inpaint, clip-image, clip-text); see import_kind.
    bpe: (encoder.json, vocab.bpe) for the GPT-2 kinds (plain or gzipped; default: an installed
    glide_text2im's). config: a ModelConfig, or a name/path for load_model_config, replacing the
    released config for this kind (e.g. a smaller test model). overwrite: replace an existing
    checkpoint at dst (clip kinds instead join the other tower already there).
    """
    from training.checkpoint import CONFIG_FILE, save_checkpoint

    src, dst = Path(src), Path(dst)
    model_kind, tower = import_kind(kind)
    clip = model_kind is ModelKind.CLIP
    if not src.is_file():
        raise UserError(f"{src}: no such file")
    if clip and config is not None:
        raise UserError(f"--model-config: not used for --kind {kind} (the noised CLIP's sizes are read from {src})")
    exists = (dst / CONFIG_FILE).is_file()
    if dst.exists() and not exists and (not dst.is_dir() or any(dst.iterdir())):
        raise UserError(f"{dst}: exists and is not a checkpoint folder; choose another -o")
    if exists and not overwrite and not clip:
        raise UserError(f"{dst}: a checkpoint is already there (use --force to replace it)")

    _say(f"reading {src} ({src.stat().st_size / 1e6:.1f} MB)", quiet)
    source_sha = file_digest(src).sha256
    state = read_torch_state_dict(src)
    provenance = {"repo": SOURCE_REPO, "file": src.name, "sha256": source_sha, "kind": model_kind.value,
                  "stored_dtypes": _dtype_counts(state)}

    if clip:
        tower = _clip_tower(state, tower, src)
        provenance["tower"] = tower
        return _import_clip_half(src, dst, tower, state, provenance, exists, overwrite, quiet)

    cfg = _config_for(model_kind, config)
    _say(f"checking {len(state)} tensors against the {cfg.kind} config", quiet)
    weights = convert_glide_state_dict(state, cfg, str(src))
    del state
    tokenizer_files = _gpt2_vocabulary(bpe, cfg, src) if cfg.tokenizer.get("type") == "gpt2" else {}
    _say(f"writing {dst}", quiet)
    return save_checkpoint(dst, weights, cfg, step=None, tokenizer_files=tokenizer_files,
                           extra={"imported_from": [provenance]})


def _config_for(kind: ModelKind, config):
    from training.model_config import ModelConfig, load_model_config

    if config is None:
        cfg = load_model_config(RELEASED_CONFIG[kind])
    elif isinstance(config, ModelConfig):
        cfg = config
    else:
        cfg = load_model_config(config)
    if cfg.kind != kind:
        raise UserError(f"model config for --kind {kind}: has kind {cfg.kind!r}, expected {kind!r}")
    return cfg


def _clip_tower(state: dict, asked: str | None, src: Path) -> str:
    """The tower `src` holds: as asked (checked against its keys), else read from its keys."""
    from training.import_clip import clip_tower_of

    found = clip_tower_of(state)
    if asked is None and found is None:
        raise UserError(f"{src}: neither a noised CLIP image tower (blocks.input.patch_proj) nor a text "
                        "tower (blocks.input.w_voc)")
    if asked is not None and found is not None and found != asked:
        raise UserError(f"{src}: holds the {found} tower, not the {asked} tower given as --kind")
    return asked or found


def _gpt2_vocabulary(bpe, cfg, src: Path) -> dict[str, bytes]:
    """Validated GPT-2 vocabulary bytes (unzipped) for tokenizer/; its size must match the model's."""
    from training.tokenizers.gpt2_bpe import ENCODER_FILE, MERGES_FILE, GPT2Tokenizer, read_maybe_gzipped

    files = find_bpe_files(bpe)
    if files is None:
        raise UserError(f"{src}: GPT-2 vocabulary needed: pass --bpe ENCODER_JSON VOCAB_BPE "
                        "(glide-text2im's tokenizer/encoder.json.gz and vocab.bpe.gz)")
    encoder_bytes, merges_bytes = read_maybe_gzipped(files[0]), read_maybe_gzipped(files[1])
    tokenizer = GPT2Tokenizer.from_bytes(encoder_bytes, merges_bytes, encoder_source=str(files[0]),
                                         merges_source=str(files[1]))
    if tokenizer.n_vocab != cfg.n_vocab:
        raise UserError(f"{files[0]}: vocabulary has {tokenizer.n_vocab} tokens but the model config "
                        f"expects n_vocab {cfg.n_vocab}")
    return {ENCODER_FILE: encoder_bytes, MERGES_FILE: merges_bytes}


def _import_clip_half(src: Path, dst: Path, tower: str, state: dict, provenance: dict, exists: bool,
                      overwrite: bool, quiet: bool) -> Path:
    from training.checkpoint import (checkpoint_kind, load_state_dict, model_config_of, read_checkpoint_meta,
                                     save_checkpoint)
    from training.import_clip import convert_clip_checkpoint, merge_clip_halves

    try:
        converted = convert_clip_checkpoint(state, tower)
    except UserError as e:
        raise UserError(f"{src}: {e}") from None
    del state
    imported = [provenance]
    if exists and not overwrite:
        meta = read_checkpoint_meta(dst)
        if checkpoint_kind(dst, meta) is not ModelKind.CLIP:
            raise UserError(f"{dst}: holds a {checkpoint_kind(dst, meta)} checkpoint, not a noised CLIP half "
                            "(use --force to replace it)")
        _say(f"joining the tower already in {dst}", quiet)
        old_state, meta, _ = load_state_dict(dst, use_ema=False)
        old_cfg = model_config_of(dst, meta)
        try:
            converted = merge_clip_halves((old_state, old_cfg), converted)
        except UserError as e:
            raise UserError(f"{src} + {dst}: {e}") from None
        previous = meta.get("extra", {}).get("imported_from", [])
        previous = previous if isinstance(previous, list) else [previous]
        imported = [p for p in previous if isinstance(p, dict) and _tower_of(p) != tower] + imported
    weights, cfg = converted
    _say(f"writing {dst}", quiet)
    return save_checkpoint(dst, weights, cfg, step=None, extra={"imported_from": imported})


def _tower_of(provenance: dict) -> str | None:
    """The tower an "imported_from" entry records (imports before ModelKind stored it as "kind")."""
    return provenance.get("tower") or provenance.get("kind")
