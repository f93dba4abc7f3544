"""The feature networks the image metrics run on: Inception-v3 (FID, IS, precision/recall) or a CLIP
image encoder standing in when no Inception weights are given.

    extractor = load_feature_extractor(inception="pt_inception-2015-12-05-6726825d.pth")
    extractor = load_feature_extractor(clip="ViT-B-16=/models/vit-b-16.bin")   # or a CLIP run folder
    out = extractor.extract(images)      # uint8 [N, H, W, 3] -> ImageFeatures(pool [N, D], logits or None)
    extractor.describe()                 # which network, exact weights, preprocessing: every result records it
    extractor.digest()                   # sha256 of describe(): keys cached reference statistics

Inception-v3: the FID Inception network (the TensorFlow graph of 2015-12-05 that the reference FID and
IS implementations use) from a local weights file in the common pt_inception layout (pytorch-fid's
pt_inception-2015-12-05-6726825d.pth, torch-fidelity's weights-inception-2015-12-05-6726825d.pth: a
state dict with torchvision's Inception3 names, 1008 classes). The network and its input path are
torch-fidelity's (FeatureExtractorInceptionV3): uint8 pixels resized to 299 x 299 by bilinear
interpolation exactly as TensorFlow 1.x computes it (its align_corners=False is not PyTorch's
half-pixel interpolation, and there is no antialiasing), then (x - 128) / 128; it returns the 2048
pool3 features and the 1008 logits without the bias ("logits_unbiased", what the original Inception
Score code takes the softmax of). The file is read with torch.load(weights_only=True): a weights file
that holds anything but tensors is refused before torch-fidelity sees it.

CLIP: any open_clip image encoder with local weights, or a clean CLIP trained here (the `--clip MODEL`
specs of filtering.clip_source). Images are resized to the encoder's input size (bicubic, as CLIP's
preprocessing); the features are its L2-normalised image embeddings. A CLIP has no class logits, so
the Inception Score is not available on CLIP features.

Nothing is downloaded: every network comes from a local file.
"""
from __future__ import annotations

import hashlib
import io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import shards as sh

INCEPTION_SIZE = 299


@dataclass
class ImageFeatures:
    """pool: [N, D] float32 features (FID, precision/recall); logits: [N, C] float32 class logits
    (Inception Score), None for networks without them."""

    pool: np.ndarray
    logits: Optional[np.ndarray] = None

    @staticmethod
    def concatenate(parts: list["ImageFeatures"], dim: int) -> "ImageFeatures":
        if not parts:
            return ImageFeatures(np.zeros((0, dim), np.float32), None)
        logits = None if parts[0].logits is None else np.concatenate([p.logits for p in parts])
        return ImageFeatures(np.concatenate([p.pool for p in parts]), logits)


class FeatureExtractor(ABC):
    """What the metrics need of a feature network (Inception or CLIP)."""

    kind: str          # "inception" or "clip"
    dim: int           # pool feature width
    has_logits: bool   # class logits for the Inception Score
    batch_size: int

    @abstractmethod
    def describe(self) -> dict:
        """Which network, its exact weights (sha256) and its input preprocessing, as JSON-able data."""

    def digest(self) -> str:
        """sha256 of describe(): changes whenever the weights or the preprocessing do."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()

    @abstractmethod
    def _extract_batch(self, images: np.ndarray) -> ImageFeatures:
        """One batch of uint8 [B, H, W, 3] images -> their pool features (and logits, if any)."""

    def extract(self, images) -> ImageFeatures:
        """uint8 [N, H, W, 3] images (or a list of equally sized ones) -> ImageFeatures, in batches."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        parts = [self._extract_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return ImageFeatures.concatenate(parts, self.dim)


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool3 (2048) and logits (1008) from a pt_inception weights file (module doc)."""

    kind = "inception"
    dim = 2048
    has_logits = True

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 32):
        import torch
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = Path(weights).expanduser()
        if not path.is_file():
            raise sh.UserError(f"{weights}: Inception weights file not found (give a local pt_inception file; "
                               f"nothing is downloaded)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "fc.weight" not in state:
                raise ValueError("not a state dict with the FID Inception's layers (no 'fc.weight')")
            buffer = io.BytesIO()  # tensors only: torch-fidelity's own torch.load of it runs no pickled code
            torch.save(state, buffer)
            buffer.seek(0)
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=buffer)
        except Exception as e:  # whatever the file holds, one line naming it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise sh.UserError(f"{weights}: not loadable as pt_inception (FID Inception-v3) weights "
                               f"({first[:200]})") from None
        self.net = net.to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.path = path.resolve()
        self.weights_sha256 = sh.file_digest(str(self.path)).sha256
        self.library = f"torch-fidelity {torch_fidelity.__version__}"

    def describe(self) -> dict:
        return {"network": "inception-v3", "format": "pt_inception (FID Inception, TF graph 2015-12-05)",
                "weights": str(self.path), "weights_sha256": self.weights_sha256,
                "features": {"pool": "pool3, 2048", "logits": "logits_unbiased, 1008"},
                "resize": f"bilinear to {INCEPTION_SIZE}x{INCEPTION_SIZE} as TensorFlow 1.x, no antialiasing",
                "implementation": self.library}

    def _extract_batch(self, images: np.ndarray) -> ImageFeatures:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            pool, logits = self.net(x)
        return ImageFeatures(pool.float().cpu().numpy(), logits.float().cpu().numpy())


class ClipImageFeatures(FeatureExtractor):
    """Unit-norm CLIP image embeddings (open_clip or a clean CLIP trained here); also the text side
    and the logit scale for the CLIP score."""

    kind = "clip"
    has_logits = False

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32):
        import torch

        from filtering.clip_models import load_encoder
        from filtering.clip_source import resolve_clip

        self.source = resolve_clip(spec)
        self.encoder = load_encoder(self.source, device)
        self.device = torch.device(device)
        self.dim = self.encoder.dim
        self.size = self.encoder.image_size
        self.batch_size = batch_size

    def describe(self) -> dict:
        return {"network": "clip", **self.source.describe(),
                "resize": f"bicubic to {self.size}x{self.size} (PIL)", "features": "image embedding, unit L2 norm"}

    def logit_scale(self) -> float:
        return self.encoder.logit_scale()

    def _pixels(self, images: np.ndarray):
        import torch
        from PIL import Image

        if images.shape[1:3] != (self.size, self.size):
            images = np.stack([np.asarray(Image.fromarray(im).resize((self.size, self.size), Image.BICUBIC))
                               for im in images])
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return x.permute(0, 3, 1, 2).float().div_(255.0)

    def _extract_batch(self, images: np.ndarray) -> ImageFeatures:
        import torch

        from filtering.clip_features import l2_normalise

        with torch.inference_mode():
            z = l2_normalise(self.encoder.encode_pixels(self._pixels(images)).float())
        return ImageFeatures(z.cpu().numpy(), None)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """[N, D] float32 unit-norm text embeddings."""
        import torch

        from filtering.clip_features import l2_normalise

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                out.append(l2_normalise(self.encoder.encode_text(list(texts[i:i + self.batch_size])).float()).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)


def load_feature_extractor(inception: Optional[str] = None, clip: Optional[str] = None, device: str = "cpu",
                           batch_size: int = 32) -> FeatureExtractor:
    """Inception-v3 from `inception` (a pt_inception weights file) when given; otherwise the CLIP
    `clip` names stands in. UserError when neither is given or the given one does not load."""
    if inception:
        return InceptionFeatures(inception, device=device, batch_size=batch_size)
    if clip:
        return ClipImageFeatures(clip, device=device, batch_size=batch_size)
    raise sh.UserError("features: no feature network: give Inception-v3 weights (a local pt_inception file) "
                       "or a CLIP (ARCH=WEIGHTS or a CLIP checkpoint folder) to stand in")
