"""The scene classifier: a small CNN trained on a sample world's ground truth (truth.parquet) that
reads a scene's attributes (evaluation.scene_attributes) back from pixels, so caption accuracy of
generated samples is measured, not guessed.

    clf = train_scene_classifier("world/", epochs=8)         # a folder written by `glide sample-world`
    clf.accuracy_on_world("held-out-world/")                 # {"background": 0.99, ...} on real world images
    clf.save("scene-clf/")                                   # model.safetensors + scene-classifier.json
    clf = SceneClassifier.load("scene-clf/")
    clf.predict(images)                                      # uint8 [N, H, W, 3] -> [{"background": ..}, ..]
    clf.embed(images)                                        # [N, 64] features (a FeatureExtractor stands on it)

Images of any size are resized (PIL box filter) to the classifier's input size (INPUT_SIZE by default). Training also shows each world
image blurred as the base model's 16 px output looks after upsampling (down to 16 px and back), so
the classifier reads blurry samples as well as crisp world images. Saved without pickle: the weights
as safetensors, the vocabulary, architecture and held-out accuracy as JSON. An attribute with one
class only in the training world (count in a one-shape world) gets no head: it is not measured.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

import shards as sh
from evaluation.model_files import load_network, save_network
from evaluation.scene_attributes import ATTRIBUTES, attributes_of_scene

INPUT_SIZE = 32
EMBED_DIM = 64
CHANNELS = (16, 32, 64)
FORMAT = "glide-scene-classifier"
VERSION = 1
CONFIG_FILE = "scene-classifier.json"
BLUR_SIZE = 16   # the demo base model's resolution


def resize_images(images, size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 [N, H, W, 3] (or a list of PIL images / arrays) -> uint8 [N, size, size, 3]."""
    from PIL import Image

    out = []
    for im in images:
        pil = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
        pil = pil.convert("RGB")
        out.append(np.asarray(pil if pil.size == (size, size) else pil.resize((size, size), Image.BOX)))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def blur_through(images: np.ndarray, size: int) -> np.ndarray:
    """Down to `size` px and back up (bicubic): what an upsampled low-resolution sample looks like."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BOX)
                                .resize(im.shape[:2][::-1], Image.BICUBIC)) for im in images])


def _build_network(heads: dict[str, int], input_size: int):
    import torch.nn as nn

    class SceneNet(nn.Module):
        """[B, 3, S, S] in [-1, 1] -> embedding [B, 64] -> one logit vector per attribute (S: input_size)."""

        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for c in CHANNELS:  # S -> S/2 -> S/4 -> S/8 px
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                           nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
                c_in = c
            flat = c_in * (input_size // 8) ** 2
            self.torso = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, EMBED_DIM), nn.ReLU())
            self.heads = nn.ModuleDict({name: nn.Linear(EMBED_DIM, n) for name, n in heads.items()})

        def embed(self, x):
            return self.torso(x)

        def forward(self, x):
            z = self.torso(x)
            return {name: head(z) for name, head in self.heads.items()}

    return SceneNet()


def images_to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass
class WorldImages:
    images: np.ndarray               # uint8 [N, size, size, 3]
    labels: dict[str, list[str]]     # attribute -> [N] class names


def read_world_images(world_dir: str | Path, limit: Optional[int] = None, size: int = INPUT_SIZE) -> WorldImages:
    """A sample world's images (resized) and the attributes of their scenes, from truth.parquet."""
    import pyarrow.parquet as pq
    from PIL import Image

    root = Path(world_dir)
    truth = root / "truth.parquet"
    if not truth.is_file():
        raise sh.UserError(f"{world_dir}: not a sample world (no truth.parquet); make one with "
                           f"`glide sample-world -o DIR`")
    rows = pq.read_table(truth, columns=["path", "scene"]).to_pylist()[:limit]
    if not rows:
        raise sh.UserError(f"{truth}: no images")
    images, labels = [], {a: [] for a in ATTRIBUTES}
    for row in rows:
        with Image.open(root / row["path"]) as im:
            images.append(resize_images([im], size)[0])
        for name, value in attributes_of_scene(json.loads(row["scene"])).items():
            labels[name].append(value)
    return WorldImages(np.stack(images), labels)


@dataclass
class SceneClassifier:
    """The network and its vocabulary: classes[attribute] = class names, in logit order."""

    network: object
    classes: dict[str, list[str]]
    info: dict = field(default_factory=dict)   # training world, steps, held-out accuracy (saved as JSON)
    input_size: int = INPUT_SIZE

    # ---- use ----------------------------------------------------------------------------------------
    def _logits(self, images) -> dict[str, np.ndarray]:
        import torch

        x = resize_images(images, self.input_size)
        self.network.eval()
        out = {name: [] for name in self.classes}
        with torch.inference_mode():
            for i in range(0, len(x), 256):
                for name, logits in self.network(images_to_tensor(x[i:i + 256])).items():
                    out[name].append(logits.numpy())
        return {name: np.concatenate(v) if v else np.zeros((0, len(self.classes[name])), np.float32)
                for name, v in out.items()}

    def predict(self, images) -> list[dict[str, str]]:
        """One {attribute: class name} per image, for the attributes this classifier has."""
        logits = self._logits(images)
        n = len(next(iter(logits.values()))) if logits else 0
        return [{name: self.classes[name][int(np.argmax(logits[name][i]))] for name in self.classes}
                for i in range(n)]

    def embed(self, images) -> np.ndarray:
        """float32 [N, EMBED_DIM]: the features the heads read (for FID on scene features)."""
        import torch

        x = resize_images(images, self.input_size)
        self.network.eval()
        with torch.inference_mode():
            parts = [self.network.embed(images_to_tensor(x[i:i + 256])).numpy() for i in range(0, len(x), 256)]
        return np.concatenate(parts) if parts else np.zeros((0, EMBED_DIM), np.float32)

    def accuracy(self, images, labels: dict[str, list[str]]) -> dict[str, float]:
        """Share of images whose predicted attribute equals the label, per attribute this classifier has."""
        predicted = self.predict(images)
        return {name: float(np.mean([p[name] == want for p, want in zip(predicted, labels[name])]))
                for name in self.classes}

    def accuracy_on_world(self, world_dir: str | Path) -> dict[str, float]:
        world = read_world_images(world_dir, size=self.input_size)
        return self.accuracy(world.images, world.labels)

    # ---- storage ------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """DIR/model.safetensors and DIR/scene-classifier.json (written last: marks a finished save)."""
        return save_network(directory, self.network, CONFIG_FILE, {
            "format": FORMAT, "version": VERSION, "input_size": self.input_size, "embed_dim": EMBED_DIM,
            "channels": list(CHANNELS), "classes": self.classes, "info": self.info})

    @staticmethod
    def load(directory: str | Path) -> "SceneClassifier":
        meta, state = load_network(directory, CONFIG_FILE, FORMAT, VERSION,
                                   "train one with `glide train-scene-classifier WORLD_DIR -o DIR`")
        classes = meta["classes"]
        size = int(meta["input_size"])
        network = _build_network({name: len(names) for name, names in classes.items()}, size)
        network.load_state_dict(state)
        network.eval()
        return SceneClassifier(network, classes, {**meta["info"], "path": str(Path(directory).resolve()),
                                                  "weights_sha256": meta["weights_sha256"]}, size)


def train_scene_classifier(world_dir: str | Path, *, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
                           seed: int = 0, limit: Optional[int] = None, input_size: int = INPUT_SIZE,
                           log=None) -> SceneClassifier:
    """Train on every image of a sample world (one epoch = each image once, blurred at random half the time)."""
    import torch
    import torch.nn.functional as F

    started = time.time()
    if input_size < 16 or input_size % 8:
        raise sh.UserError(f"input size: {input_size} is not a multiple of 8 of at least 16")
    world = read_world_images(world_dir, limit, input_size)
    classes = {name: sorted(set(values)) for name, values in world.labels.items() if len(set(values)) > 1}
    if not classes:
        raise sh.UserError(f"{world_dir}: every image shows the same scene attributes; nothing to learn")
    targets = {name: torch.tensor([names.index(v) for v in world.labels[name]]) for name, names in classes.items()}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = _build_network({name: len(names) for name, names in classes.items()}, input_size)
    crisp = images_to_tensor(world.images)
    blurred = images_to_tensor(blur_through(world.images, BLUR_SIZE))
    n = len(world.images)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    network.train()
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = torch.from_numpy(order[i:i + batch_size])
            blur = torch.from_numpy(rng.random(len(idx)) < 0.5)[:, None, None, None]
            x = torch.where(blur, blurred[idx], crisp[idx])
            out = network(x)
            loss = sum(F.cross_entropy(out[name], targets[name][idx]) for name in classes)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            total += float(loss.detach()) * len(idx)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")
    network.eval()
    info = {"world": str(Path(world_dir).resolve()), "images": n, "epochs": epochs, "steps": step,
            "batch_size": batch_size, "lr": lr, "seed": seed, "seconds": round(time.time() - started, 1)}
    return SceneClassifier(network, classes, info, input_size)
