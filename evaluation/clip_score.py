"""The CLIP score as GLIDE defines it: E[s * cos(image embedding, caption embedding)], s the CLIP's
logit scale (exp of its learned temperature; 100 for OpenAI's CLIPs), with no clamp at 0.

    scores = clip_scores(image_embeddings, caption_embeddings, logit_scale)   # [N], one per pair
    clip_score(images, captions, clip)                                        # mean, with a CLIP loaded

(torchmetrics' CLIPScore differs: it clamps the cosine at 0 and always multiplies by 100, and it
loads Hugging Face CLIPs only; so this is written by hand.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def clip_scores(image_embeddings, text_embeddings, logit_scale: float) -> np.ndarray:
    """[N] logit_scale * cos(image_i, text_i) for paired rows of [N, D] embeddings (any norm)."""
    a = np.asarray(image_embeddings, dtype=np.float64)
    b = np.asarray(text_embeddings, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"clip_scores: paired embeddings must be [N, D] of one shape, got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(logit_scale) * (a * b).sum(axis=1)


def clip_score(images, captions: Sequence[str], clip) -> float:
    """Mean CLIP score of uint8 images [N, H, W, 3] and their captions under `clip`
    (evaluation.features.ClipImageFeatures)."""
    if len(images) != len(captions):
        raise ValueError(f"clip_score: {len(images)} images but {len(captions)} captions")
    image_embeddings = clip.extract(images).pool
    text_embeddings = clip.encode_text(list(captions))
    return float(clip_scores(image_embeddings, text_embeddings, clip.logit_scale()).mean())
