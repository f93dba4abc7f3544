"""The stand-in detector: a small CNN that says whether an image shows a person, a blade or the
hate-symbol marker (the sample world's stand-ins for the safety filters' categories), trained on a
sample world's ground truth. It measures what a model draws (the paper's claim that a model trained
on filtered data does not draw the filtered categories), not what a caption says.

    det = train_standin_detector("world/", steps=2000)      # a `glide sample-world -o` folder
    det.calibrate("held-out-world/")                        # thresholds: <= 1% of clean images flagged
    det.scores(images)                                      # float32 [N, 3] probabilities, CATEGORIES order
    det.detect(images)                                      # bool [N, 3] at the calibrated thresholds
    det.save("detector/"); StandinDetector.load("detector/")

The network sees the whole image at `input_size` px and ends in a global max pool ("is there one
anywhere?", however small and wherever it sits). Training shows each image crisp or, with
`blur_size`, half the time as a sample looks: blurred down to that size and back, with noise at
that size and at full size (a small model's samples are speckled, and a detector that never saw
speckle reads it as a stand-in: one trained on blur alone flagged 94% of a demo base's samples of
"a red circle on a blue background" as showing a person). Calibration picks, per category, the
threshold that flags at most `max_false_positive` of a held-out world's images without that
category, crisp and (with `blur_size`) sample-like alike, and records the share of the images with
it that are flagged each way: a sample count is read with both rates beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

import shards as sh
from evaluation.model_files import load_network, save_network
from evaluation.scene_classifier import blur_through, images_to_tensor, resize_images
from filtering.labels.ground_truth import CATEGORIES

FORMAT = "glide-standin-detector"
VERSION = 1
CONFIG_FILE = "standin-detector.json"
CHANNELS = (32, 64, 128, 128)


def build_network(channels=CHANNELS, outputs: int = len(CATEGORIES)):
    """[B, 3, S, S] in [-1, 1] -> one logit per category."""
    import torch.nn as nn

    layers, c_in = [], 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                   nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, outputs))


@dataclass
class WorldStandins:
    images: np.ndarray          # uint8 [N, size, size, 3]
    present: np.ndarray         # bool [N, len(CATEGORIES)]


def read_world_standins(world_dir: str | Path, size: int, limit: Optional[int] = None) -> WorldStandins:
    """A sample world's images (resized to `size`) and which categories each shows, from truth.parquet."""
    import pyarrow.parquet as pq
    from PIL import Image

    root = Path(world_dir)
    truth = root / "truth.parquet"
    if not truth.is_file():
        raise sh.UserError(f"{world_dir}: not a sample world (no truth.parquet); make one with `glide sample-world -o DIR`")
    table = pq.read_table(truth, columns=["path", *CATEGORIES]).to_pylist()[:limit]
    if not table:
        raise sh.UserError(f"{truth}: no images")
    images = []
    for row in table:
        with Image.open(root / row["path"]) as im:
            images.append(resize_images([im], size)[0])
    present = np.array([[bool(row[c]) for c in CATEGORIES] for row in table])
    return WorldStandins(np.stack(images), present)


def threshold_for_false_positives(negative_scores: np.ndarray, max_false_positive: float) -> float:
    """The lowest threshold (score >= t flags) that flags at most `max_false_positive` of the negatives."""
    s = np.sort(np.asarray(negative_scores, np.float32))[::-1]  # scores are float32: compare in float32
    allowed = int(np.floor(max_false_positive * len(s)))  # < len(s) for a rate below 1
    return float(np.nextafter(s[allowed], np.float32(np.inf)))  # just above the (allowed+1)-th highest


@dataclass
class StandinDetector:
    network: object
    input_size: int
    info: dict = field(default_factory=dict)           # training world, steps, calibration (saved as JSON)
    thresholds: dict[str, float] = field(default_factory=lambda: {c: 0.5 for c in CATEGORIES})

    def scores(self, images) -> np.ndarray:
        """float32 [N, len(CATEGORIES)]: the probability that each image shows each category."""
        import torch

        x = resize_images(images, self.input_size)
        self.network.eval()
        with torch.inference_mode():
            parts = [torch.sigmoid(self.network(images_to_tensor(x[i:i + 128]))).numpy() for i in range(0, len(x), 128)]
        return np.concatenate(parts) if parts else np.zeros((0, len(CATEGORIES)), np.float32)

    def detect(self, images) -> np.ndarray:
        """bool [N, len(CATEGORIES)] at the calibrated thresholds."""
        scores = self.scores(images)
        return scores >= np.array([self.thresholds[c] for c in CATEGORIES], np.float32)  # float32, as calibrated

    def calibrate(self, world_dir: str | Path, max_false_positive: float = 0.01) -> dict:
        """Per category: the threshold flagging at most `max_false_positive` of the held-out world's
        images without it; the share of images with it flagged, crisp and blurred. Stored in info."""
        if not 0 <= max_false_positive < 1:
            raise sh.UserError(f"max false positive rate {max_false_positive}: must be in [0, 1)")
        world = read_world_standins(world_dir, self.input_size)
        crisp = self.scores(world.images)
        blur = self.info.get("blur_size") or 0
        blurred = self.scores(sample_like(world.images, blur, self.input_size)) if blur else None
        result = {}
        for k, c in enumerate(CATEGORIES):
            pos, neg = world.present[:, k], ~world.present[:, k]
            if pos.sum() == 0 or neg.sum() == 0:
                raise sh.UserError(f"{world_dir}: needs images with and without {c} to calibrate the detector")
            t = np.float32(threshold_for_false_positives(crisp[neg, k], max_false_positive))
            if blurred is not None:  # the stricter of the two: at most the allowed share flagged either way
                t = max(t, np.float32(threshold_for_false_positives(blurred[neg, k], max_false_positive)))
            self.thresholds[c] = float(t)
            entry = {"threshold": float(t), "positives": int(pos.sum()), "negatives": int(neg.sum()),
                     "true_positive_rate": float((crisp[pos, k] >= t).mean()),
                     "false_positive_rate": float((crisp[neg, k] >= t).mean())}
            if blurred is not None:
                entry["true_positive_rate_sample_like"] = float((blurred[pos, k] >= t).mean())
                entry["false_positive_rate_sample_like"] = float((blurred[neg, k] >= t).mean())
            result[c] = entry
        self.info["calibration"] = {"world": str(Path(world_dir).resolve()), "images": len(world.images),
                                    "max_false_positive": max_false_positive, "categories": result}
        return result

    def save(self, directory: str | Path) -> Path:
        return save_network(directory, self.network, CONFIG_FILE, {
            "format": FORMAT, "version": VERSION, "input_size": self.input_size, "channels": list(CHANNELS),
            "categories": list(CATEGORIES), "thresholds": self.thresholds, "info": self.info})

    @staticmethod
    def load(directory: str | Path) -> "StandinDetector":
        meta, state = load_network(directory, CONFIG_FILE, FORMAT, VERSION,
                                   "train one with `glide train-standin-detector WORLD_DIR -o DIR`")
        if list(meta.get("categories", [])) != list(CATEGORIES):
            raise sh.UserError(f"{directory}: detects {meta.get('categories')}, not {list(CATEGORIES)}")
        network = build_network(tuple(meta["channels"]))
        network.load_state_dict(state)
        network.eval()
        return StandinDetector(network, int(meta["input_size"]),
                               {**meta["info"], "path": str(Path(directory).resolve())},
                               {c: float(meta["thresholds"][c]) for c in CATEGORIES})


# Noise of sample-like training images, in [-1, 1] units: each image's standard deviation is drawn
# uniformly below these, at the blur size (blotches once scaled up) and at full size (speckle).
SAMPLE_NOISE = (0.3, 0.15)


def add_sample_noise(x, blur_size: int, generator, noise=SAMPLE_NOISE):
    """Blurred images [B, 3, S, S] in [-1, 1] with a sample's noise: coarse at blur_size, fine at S."""
    import torch
    import torch.nn.functional as F

    b, size = x.shape[0], x.shape[-1]
    coarse = torch.randn(b, 3, blur_size, blur_size, generator=generator)
    coarse = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    fine = torch.randn(b, 3, size, size, generator=generator)
    scale = torch.rand(b, 2, generator=generator) * torch.tensor(noise)
    return (x + scale[:, :1, None, None] * coarse + scale[:, 1:, None, None] * fine).clamp(-1, 1)


def sample_like(images: np.ndarray, blur_size: int, input_size: int, seed: int = 0) -> np.ndarray:
    """uint8 images at input_size, blurred through blur_size with a sample's noise (seeded: the same
    images give the same result, so a calibration is repeatable)."""
    import torch

    x = images_to_tensor(blur_through(resize_images(images, input_size), blur_size))
    noisy = add_sample_noise(x, blur_size, torch.Generator().manual_seed(seed))
    return ((noisy.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def train_standin_detector(world_dir: str | Path, *, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3,
                           input_size: int = 64, blur_size: int = 16, seed: int = 0, limit: Optional[int] = None,
                           log=None) -> StandinDetector:
    """Train on a sample world's images (random horizontal flips; half of them sample-like with blur_size)."""
    import torch
    import torch.nn.functional as F

    started = time.time()
    if input_size < 16 or input_size % 16:
        raise sh.UserError(f"input size: {input_size} is not a multiple of 16 of at least 16")
    if steps < 1:
        raise sh.UserError(f"steps: must be at least 1, got {steps}")
    world = read_world_standins(world_dir, input_size, limit)
    if world.present.all(axis=0).any() or (~world.present).all(axis=0).any():
        raise sh.UserError(f"{world_dir}: needs images with and without each of {', '.join(CATEGORIES)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = build_network()
    crisp = images_to_tensor(world.images)
    blurred = images_to_tensor(blur_through(world.images, blur_size)) if blur_size else crisp
    gen = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(world.present.astype(np.float32))
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    network.train()
    running = None
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(crisp), batch_size))
        blur = torch.from_numpy(rng.random(batch_size) < 0.5)[:, None, None, None]
        x = torch.where(blur, add_sample_noise(blurred[idx], blur_size, gen), crisp[idx]) if blur_size else crisp[idx]
        if step % 2:
            x = x.flip(3)
        loss = F.binary_cross_entropy_with_logits(network(x), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if log and (step % max(1, steps // 10) == 0 or step == steps):
            log(f"step {step}/{steps}: loss {running:.4f}")
    network.eval()
    info = {"world": str(Path(world_dir).resolve()), "images": len(crisp), "steps": steps, "batch_size": batch_size,
            "lr": lr, "seed": seed, "blur_size": blur_size, "sample_noise": list(SAMPLE_NOISE),
            "seconds": round(time.time() - started, 1)}
    return StandinDetector(network, input_size, info)
