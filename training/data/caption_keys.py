"""Which captions of a CLIP batch truthfully describe which images: the contrastive loss's positives.

A CLIP trained on clauses ("a red circle on a blue background, with a knife" trains as "with a
knife" some epochs) sees the same short text for many images of a batch, and a text that is true of
images it was not paired with. Plain InfoNCE calls those negatives, so "with a knife" is taught to
prefer the knife images that happen to carry that clause this epoch over the knife images captioned
by their colour: the very feature the clause names gets a gradient that cancels out. The loss instead
counts text j as a positive of image i when it is image i's caption or one of its clauses (the
label-aware targets of UniCL, Yang et al. 2022). Rows are matched through 63-bit keys of the
normalised text, so the batch stays a stack of per-row tensors that slices like any other.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def caption_clauses(caption: str) -> list[str]:
    """The clauses a caption entails: its comma-separated parts, stripped, except that a list after
    "with" gives one clause per item ("..., with a person, a knife and a strange symbol" -> "with a
    person", "with a knife", "with a strange symbol"). Each item is true of the image on its own: taken
    as one clause, "with a person and a knife" made every image with a knife and a person a negative
    of "with a knife", a third to a half of the knife images of the sample worlds."""
    clauses: list[str] = []
    listing = False   # inside a "with" list: a part not opening with "with" is its next item
    for part in (p.strip() for p in caption.split(",")):
        if not part:
            continue
        opens = part[:5].lower() == "with "
        if opens or listing:
            listing = True
            items = part[5:] if opens else part
            clauses += [f"{part[:4] if opens else 'with'} {item.strip()}"
                        for item in items.split(" and ") if item.strip()]
        else:
            clauses.append(part)
    return clauses


def text_key(text: str) -> int:
    """A stable non-negative 63-bit key of a text (case and surrounding spaces ignored)."""
    digest = hashlib.blake2b(text.strip().lower().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """int64 [B]: the key of each text a row trains with."""
    return np.array([text_key(t) for t in texts], dtype=np.int64)


def described_keys(captions: Sequence[str]) -> np.ndarray:
    """int64 [B, K]: per row the keys of every text true of its image (the caption and each of its
    clauses), padded with -1 (no text has that key)."""
    rows = [[text_key(c)] + [text_key(k) for k in caption_clauses(c)] for c in captions]
    out = np.full((len(rows), max((len(r) for r in rows), default=1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def positives_matrix(described, texts):
    """[B_img, K] described keys and [B_txt] text keys (torch) -> bool [B_img, B_txt]: text j is true of image i."""
    return (described[:, None, :] == texts[None, :, None]).any(dim=-1)
