"""Tokenizers: GPT-2 BPE (glide-text2im's released models) and CLIP BPE (models trained here).

A model config names its tokenizer (`ModelConfig.tokenizer`):
  {"type": "gpt2"}   vocabulary files in the checkpoint folder: tokenizer/encoder.json and
                     tokenizer/vocab.bpe (or "encoder"/"vocab" paths, relative to base_dir)
  {"type": "clip"}   open_clip's bundled vocabulary; optional "vocab" path to another .txt.gz
Either may set "lowercase" (gpt2 only; default true, as glide-text2im).
"""
from __future__ import annotations

import os
from pathlib import Path

from shards import UserError
from training.tokenizers.base import Tokenizer

TOKENIZER_DIR = "tokenizer"
_KEYS = {"gpt2": {"type", "encoder", "vocab", "lowercase"}, "clip": {"type", "vocab"}}

__all__ = ["Tokenizer", "build_tokenizer", "vocabulary_files", "TOKENIZER_DIR"]


def vocabulary_files(tokenizer_cfg, base_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Files a checkpoint must carry in tokenizer/ for this tokenizer: {name: source path}.

    GPT-2: encoder.json and vocab.bpe (from base_dir/tokenizer/ or the config's paths); pass the
    result as save_checkpoint(tokenizer_files=...) so an export of a fine-tuned GPT-2 model keeps
    its vocabulary. CLIP (bundled vocabulary): none.
    """
    tokenizer = build_tokenizer(tokenizer_cfg, base_dir)  # validates the files
    return dict(getattr(tokenizer, "files", {}))


def build_tokenizer(tokenizer_cfg, base_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Build the tokenizer a model config names.

    `tokenizer_cfg`: {"type": "gpt2" | "clip", ...}. `base_dir`: the checkpoint folder whose
    tokenizer/ holds GPT-2 vocabulary files (relative paths in the config resolve against it).
    """
    if hasattr(tokenizer_cfg, "tokenizer"):  # a ModelConfig
        tokenizer_cfg = tokenizer_cfg.tokenizer
    if not isinstance(tokenizer_cfg, dict) or "type" not in tokenizer_cfg:
        raise UserError(f"tokenizer config {tokenizer_cfg!r}: expected {{\"type\": \"gpt2\"}} or {{\"type\": \"clip\"}}")
    kind = tokenizer_cfg["type"]
    if kind not in _KEYS:
        raise UserError(f"tokenizer config: unknown type {kind!r} (gpt2 or clip)")
    unknown = set(tokenizer_cfg) - _KEYS[kind]
    if unknown:
        raise UserError(f"tokenizer config: unknown key {sorted(unknown)[0]!r} for type {kind!r}")
    base = Path(base_dir) if base_dir is not None else None

    def resolve(value: str | None, default: str) -> Path | None:
        if value is None:
            return base / TOKENIZER_DIR / default if base is not None else None
        p = Path(value)
        return p if p.is_absolute() or base is None else base / p

    if kind == "clip":
        from training.tokenizers.clip_bpe import clip_tokenizer

        vocab = resolve(tokenizer_cfg.get("vocab"), "") if tokenizer_cfg.get("vocab") else None
        return clip_tokenizer(str(vocab) if vocab else None)

    from training.tokenizers.gpt2_bpe import ENCODER_FILE, MERGES_FILE, GPT2Tokenizer

    encoder = resolve(tokenizer_cfg.get("encoder"), ENCODER_FILE)
    merges = resolve(tokenizer_cfg.get("vocab"), MERGES_FILE)
    if encoder is None or merges is None:
        raise UserError("gpt2 tokenizer: needs its vocabulary files (encoder.json, vocab.bpe): "
                        "give base_dir or 'encoder'/'vocab' paths")
    for p in (encoder, merges):
        if not p.is_file():
            raise UserError(f"{p}: missing GPT-2 vocabulary file")
    lowercase = tokenizer_cfg.get("lowercase", True)
    if not isinstance(lowercase, bool):
        raise UserError("tokenizer config: key 'lowercase' must be true or false")
    tokenizer = GPT2Tokenizer.from_files(encoder, merges, lowercase=lowercase)
    tokenizer.files = {ENCODER_FILE: encoder, MERGES_FILE: merges}
    return tokenizer
