"""The paper's CLIP image features (GLIDE Appendix F.1) and CLIP text features in the same space.

    features = load_clip_features("ViT-B-16=/models/vit-b-16.bin", "cpu")   # or a clean CLIP run folder
    z = features.encode_images([pil_image, ...])     # [N, D] float32, unit L2 norm
    q = features.encode_text(["a knife"])            # [1, D] float32, unit L2 norm
    features.describe()                              # which model and weights (for manifests)

An image's feature: resize so the smaller side is the encoder's input size S (224 for ViT-B-16; the
small CLIPs trained here take less), three S x S crops at the start, middle and end of the longer
side (filtering.three_crop), the CLIP image embedding of each, mean-pooled and L2-normalised. Each
crop's embedding is normalised before the mean, as CLIP embeddings are compared by direction: a crop
whose embedding happens to be longer must not outvote the other two.

Decoding and cropping run on the CPU (`crops_of`, uint8); `encode_crops` runs the encoder on the
model's device: on CUDA in forwards of `batch_size` pairs (3 x batch_size crops) under float16
autocast, on a CPU in forwards of at most CPU_FORWARD_BYTES of pixels (see there).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np

from filtering.clip_source import ClipSource, resolve_clip
from filtering.three_crop import decode_three_crops, three_crops

CROPS = 3
# On a CPU a forward pass of a few pairs runs faster per FLOP than a large batch, whose activations
# leave the caches: ViT-B-16 on one thread (benchmarks/embed.py's machine) ran at ~74 GFLOP/s in
# forwards of 2-3 pairs against ~63 at 16. So CPU forwards hold at most this many bytes of float pixels
# (3 pairs of 224px crops; a 32px CLIP still takes over 150 pairs per forward).
CPU_FORWARD_BYTES = 6 << 20


def load_clip_features(spec: str | ClipSource, device: str = "cpu", batch_size: int = 32) -> "ClipFeatures":
    """Load the CLIP `spec` names (filtering.clip_source) on `device`; UserError naming bad input."""
    from filtering.clip_models import load_encoder

    source = spec if isinstance(spec, ClipSource) else resolve_clip(spec)
    return ClipFeatures(load_encoder(source, device), source, batch_size=batch_size)


def l2_normalise(z):
    import torch

    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1e-12)


class ClipFeatures:
    """Three-crop, mean-pooled, normalised image features and normalised text features of one CLIP."""

    def __init__(self, encoder, source: ClipSource, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder, self.source, self.batch_size = encoder, source, batch_size
        self.dim = encoder.dim
        self.crop_size = encoder.image_size
        self.device = encoder.device
        pair_bytes = CROPS * 3 * self.crop_size ** 2 * 4
        self.forward_pairs = batch_size if self.device.type == "cuda" else \
            max(1, min(batch_size, CPU_FORWARD_BYTES // pair_bytes))

    def describe(self) -> dict:
        return self.source.describe()

    # ---- CPU side --------------------------------------------------------------------------------
    def crops_of(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> uint8 [3, S, S, 3]; raises if the bytes do not decode."""
        return decode_three_crops(data, self.crop_size)

    # ---- model side ------------------------------------------------------------------------------
    def encode_crops(self, crops: np.ndarray):
        """uint8 [N, 3, S, S, 3] (N images' three crops) -> float32 [N, D] on the CPU, unit norm."""
        import torch

        n = crops.shape[0]
        if n == 0:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, n, self.forward_pairs):
                chunk = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.forward_pairs]))
                b = chunk.shape[0]
                s = self.crop_size
                # [b, 3 crops, S, S, RGB] -> [3b, RGB, S, S] in [0, 1], converted on the device
                x = chunk.to(self.device, non_blocking=True).reshape(b * CROPS, s, s, 3)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                z = l2_normalise(self.encoder.encode_pixels(x).float()).view(b, CROPS, -1)
                out.append(l2_normalise(z.mean(dim=1)).cpu())
        return torch.cat(out)

    def encode_images(self, images: Sequence):
        """PIL images -> float32 [N, D] on the CPU, unit norm."""
        if not images:
            return self.encode_crops(np.zeros((0, CROPS, self.crop_size, self.crop_size, 3), np.uint8))
        return self.encode_crops(np.stack([three_crops(im, self.crop_size) for im in images]))

    def encode_text(self, texts: Sequence[str]):
        """Strings -> float32 [N, D] on the CPU, unit norm (for searching image features by text)."""
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), self.batch_size * CROPS):
                z = self.encoder.encode_text(texts[start:start + self.batch_size * CROPS])
                out.append(l2_normalise(z.float()).cpu())
        return torch.cat(out)

    def _autocast(self):
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()
