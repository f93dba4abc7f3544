"""CLIP's BPE (49,408 ids), the default tokenizer of models trained from scratch.

The vocabulary is the `bpe_simple_vocab_16e6.txt.gz` that open_clip ships inside its wheel (found
on disk, so nothing is downloaded and open_clip itself is not imported). Text is cleaned as
open_clip's default tokenizer does (ftfy, HTML unescape, whitespace collapse, lower case), and
`padded_tokens_and_mask` frames a caption as open_clip does: <start> ids... <end>, padded with 0,
the last id forced to <end> when truncated. The empty caption stays all padding.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import regex

from shards import UserError
from training.tokenizers.base import Tokenizer
from training.tokenizers.byte_bpe import BPEMerger, byte_to_symbol, bytes_to_symbols, parse_merges, symbols_to_bytes

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file
START, END = "<start_of_text>", "<end_of_text>"
_PATTERN = regex.compile(START + "|" + END + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                         regex.IGNORECASE)


def bundled_vocab_path() -> Path:
    """open_clip's vocabulary file, located without importing open_clip (which pulls in torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("clip tokenizer: the open_clip package (open-clip-torch) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE
    if not path.is_file():
        raise UserError(f"{path}: open_clip's bundled CLIP vocabulary is missing")
    return path


def _clean(text: str) -> str:
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer(Tokenizer):
    """CLIP BPE: words end in "</w>", ids 49406/49407 are <start>/<end>, padding is 0."""

    type_name = "clip"

    def __init__(self, vocab_path: str | Path | None = None):
        path = Path(vocab_path) if vocab_path else bundled_vocab_path()
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
            merges = parse_merges(text, str(path), limit=N_MERGES)
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"{path}: not a CLIP BPE vocabulary: {e}") from None
        symbols = list(byte_to_symbol().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
        self.encoder = {s: i for i, s in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.merger = BPEMerger(merges)
        self.n_vocab = len(vocab)
        self.start_token = self.encoder[START]
        self.end_token = self.encoder[END]
        self.pad_token = 0
        self.special_ids = frozenset({self.start_token, self.end_token})

    def encode(self, text: str) -> list[int]:
        """Cleaned text -> ids, without <start>/<end> (padded_tokens_and_mask adds them)."""
        ids: list[int] = []
        for piece in _PATTERN.findall(_clean(text)):
            if piece in (START, END):
                ids.append(self.encoder[piece])
                continue
            symbols = tuple(bytes_to_symbols(piece.encode("utf-8")))
            symbols = symbols[:-1] + (symbols[-1] + "</w>",)
            ids.extend(self.encoder[s] for s in self.merger.merge(symbols))
        return ids

    def decode(self, ids) -> str:
        """Ids -> text; <start>/<end> are skipped, words are separated by single spaces."""
        text = symbols_to_bytes(self.joined_symbols(ids)).decode("utf-8", errors="replace").replace("</w>", " ")
        return text.strip()

    def padded_tokens_and_mask(self, tokens: list[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        """[<start>] + tokens + [<end>] truncated to text_ctx (last kept id forced to <end>),
        padded with 0; mask True at real ids. No tokens -> all padding, mask all False."""
        tokens = list(tokens)
        if tokens:
            tokens = [self.start_token] + tokens + [self.end_token]
            if len(tokens) > text_ctx:
                tokens = tokens[:text_ctx]
                tokens[-1] = self.end_token
        padding = text_ctx - len(tokens)
        return tokens + [self.pad_token] * padding, [True] * len(tokens) + [False] * padding


@lru_cache(maxsize=2)
def clip_tokenizer(vocab_path: str | None = None) -> CLIPTokenizer:
    """Shared instance (building the 49k-entry vocabulary takes a moment)."""
    return CLIPTokenizer(vocab_path)
