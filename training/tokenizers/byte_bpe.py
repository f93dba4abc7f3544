"""Byte-level BPE machinery shared by the GPT-2 and CLIP tokenizers.

Both tokenizers work on text whose UTF-8 bytes are first mapped to printable unicode
characters (so every byte string has a spelling and no id is ever unknown), then merged
pairwise following a ranked list of merges. They differ only in pre-tokenisation, in how a
word's end is marked ("</w>" for CLIP, a leading "Ġ" space for GPT-2) and in their special
tokens; that lives in gpt2_bpe.py / clip_bpe.py.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache()
def byte_to_symbol() -> dict[int, str]:
    """The reversible byte -> printable character table of GPT-2 and CLIP (256 entries).

    Printable latin-1 bytes map to themselves; the others (controls, space, ...) to
    chr(256 + n) in byte order, which is why a space shows up as "Ġ" in vocabularies.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}  # insertion order matters: CLIP's vocab is built from it
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache()
def symbol_to_byte() -> dict[str, int]:
    return {s: b for b, s in byte_to_symbol().items()}


def bytes_to_symbols(data: bytes) -> str:
    table = byte_to_symbol()
    return "".join(table[b] for b in data)


def symbols_to_bytes(text: str) -> bytes:
    table = symbol_to_byte()
    return bytes(table[c] for c in text)


class BPEMerger:
    """Applies ranked merges to one pre-token; results are cached per token.

    `merges` is the ordered list of (left, right) pairs of a vocab.bpe file: a lower index
    means the pair is merged first.
    """

    def __init__(self, merges: list[tuple[str, str]]):
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def merge(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """Repeatedly merge the best-ranked adjacent pair until none is in the merge list."""
        cached = self._cache.get(symbols)
        if cached is not None:
            return cached
        word = list(symbols)
        ranks = self.ranks
        while len(word) > 1:
            best_rank, best = None, None
            for pair in zip(word, word[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best = r, pair
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = tuple(word)
        if len(self._cache) < 100_000:
            self._cache[symbols] = result
        return result


def parse_merges(text: str, source: str, limit: int | None = None) -> list[tuple[str, str]]:
    """Parse vocab.bpe text: a header line (always skipped: "#version: 0.2" for GPT-2, a file
    name then "#version" for CLIP), then one "left right" pair a line; at most `limit` pairs.

    Raises ValueError naming the line when a line is not a pair.
    """
    lines = text.split("\n")[1:]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{source}: line {number} is not a merge pair: {line[:40]!r}")
        merges.append((parts[0], parts[1]))
        if limit is not None and len(merges) >= limit:
            break
    return merges
