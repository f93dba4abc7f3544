"""GPT-2 byte-level BPE, as glide-text2im's released models use it.

Vocabulary: `encoder.json` (symbol string -> id) and `vocab.bpe` (a "#version" line, then the
ranked merges), plain or gzipped (glide-text2im ships them as encoder.json.gz / vocab.bpe.gz).
glide semantics kept: text is lower-cased before encoding, `n_vocab = len(encoder)`, and the
last id (GPT-2's "<|endoftext|>") is the padding token; no start/end tokens are added.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import regex

from shards import UserError
from training.tokenizers.base import Tokenizer
from training.tokenizers.byte_bpe import BPEMerger, byte_to_symbol, bytes_to_symbols, parse_merges, symbols_to_bytes

# GPT-2's pre-tokeniser: contractions, letter runs, digit runs, other runs, each with an optional
# leading space, and whitespace.
_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"


def read_maybe_gzipped(path: str | os.PathLike) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    try:
        data = Path(path).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    return data


class GPT2Tokenizer(Tokenizer):
    """Byte-level BPE over a GPT-2 format vocabulary.

    `encoder` maps symbol strings to ids; `merges` is the ranked merge list. Every one of the 256
    byte symbols must be in `encoder`, so any text can be encoded.
    """

    type_name = "gpt2"

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]], *, lowercase: bool = True,
                 source: str = "gpt2 tokenizer"):
        missing = [s for s in byte_to_symbol().values() if s not in encoder]
        if missing:
            raise UserError(f"{source}: vocabulary lacks {len(missing)} of the 256 byte symbols "
                            f"(e.g. {missing[0]!r}); not a byte-level BPE vocabulary")
        ids = sorted(encoder.values())
        if ids != list(range(len(ids))):
            raise UserError(f"{source}: ids are not 0..{len(ids) - 1} without gaps")
        self.encoder = encoder
        self.decoder = {i: s for s, i in encoder.items()}
        self.merger = BPEMerger(merges)
        self.lowercase = lowercase
        self.n_vocab = len(encoder)
        self.pad_token = self.n_vocab - 1  # glide's end_token
        self.special_ids = frozenset({self.pad_token})

    @classmethod
    def from_files(cls, encoder_path: str | os.PathLike, merges_path: str | os.PathLike,
                   **kwargs) -> "GPT2Tokenizer":
        """Load encoder.json and vocab.bpe (each plain or gzipped); bad files raise UserError."""
        encoder_bytes = read_maybe_gzipped(encoder_path)
        merges_bytes = read_maybe_gzipped(merges_path)
        return cls.from_bytes(encoder_bytes, merges_bytes, encoder_source=str(encoder_path),
                              merges_source=str(merges_path), **kwargs)

    @classmethod
    def from_bytes(cls, encoder_bytes: bytes, merges_bytes: bytes, *, encoder_source: str = ENCODER_FILE,
                   merges_source: str = MERGES_FILE, **kwargs) -> "GPT2Tokenizer":
        try:
            encoder = json.loads(encoder_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{encoder_source}: not a JSON encoder file: {e}") from None
        if not isinstance(encoder, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in encoder.items()):
            raise UserError(f"{encoder_source}: expected a JSON object mapping symbols to integer ids")
        try:
            merges = parse_merges(merges_bytes.decode("utf-8"), merges_source)
        except UnicodeDecodeError as e:
            raise UserError(f"{merges_source}: not UTF-8 text: {e}") from None
        except ValueError as e:
            raise UserError(str(e)) from None
        return cls(encoder, merges, source=encoder_source, **kwargs)

    def encode(self, text: str) -> list[int]:
        """Text -> ids (no special tokens added). Lower-cases first, as glide-text2im does."""
        if self.lowercase:
            text = text.lower()
        ids: list[int] = []
        encoder = self.encoder
        for piece in _PATTERN.findall(text):
            for symbol in self.merger.merge(tuple(bytes_to_symbols(piece.encode("utf-8")))):
                token = encoder.get(symbol)
                if token is None:  # a merge whose result the vocabulary lacks: spell it in bytes
                    ids.extend(encoder[c] for c in symbol)
                else:
                    ids.append(token)
        return ids

    def decode(self, ids) -> str:
        """Ids -> text; the padding token is skipped, invalid UTF-8 becomes U+FFFD."""
        return symbols_to_bytes(self.joined_symbols(ids)).decode("utf-8", errors="replace")

    def padded_tokens_and_mask(self, tokens: list[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """glide's rule: keep the first `text_ctx` ids, pad with the padding token; mask True = real."""
        tokens = list(tokens)[:text_ctx]
        padding = text_ctx - len(tokens)
        return tokens + [self.pad_token] * padding, [True] * len(tokens) + [False] * padding
