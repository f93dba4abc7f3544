"""The scene classifier's embedding as a feature network: FID and precision/recall for the sample
world, where no Inception or CLIP weights exist (nothing is downloaded) but the scene classifier
was trained here on the world's ground truth.

    extractor = SceneFeatures("checkpoints/demo/scene-classifier")   # or --features scene:DIR

Its 64 features are what the classifier's heads read (colours, shape kind, count, placement): a
Frechet distance on them measures how far the samples' scene statistics are from the world's. It is
not the paper's FID (Inception-v3, 2048 features) and every report says which features it used.
"""
from __future__ import annotations

import numpy as np

from evaluation.features import FeatureExtractor, ImageFeatures
from evaluation.scene_classifier import EMBED_DIM, SceneClassifier


class SceneFeatures(FeatureExtractor):
    kind = "scene"
    dim = EMBED_DIM
    has_logits = False

    def __init__(self, path: str, batch_size: int = 256):
        self.classifier = SceneClassifier.load(path)
        self.batch_size = batch_size

    def describe(self) -> dict:
        info = self.classifier.info
        return {"network": "scene-classifier", "weights": info["path"], "weights_sha256": info["weights_sha256"],
                "features": f"embedding, {EMBED_DIM}", "resize": f"box filter to {self.classifier.input_size}x{self.classifier.input_size} (PIL)",
                "trained_on": info.get("world")}

    def _extract_batch(self, images: np.ndarray) -> ImageFeatures:
        return ImageFeatures(self.classifier.embed(images).astype(np.float32), None)
