"""Image bytes -> a square uint8 training image; the Ray Data map that does it per batch.

Random crop follows guided-diffusion's `random_crop_arr`: the shorter side is resized to a
random length in [S / 1.0, S / 0.8], then an S x S window is cut at a random place, so a crop
covers 80-100% of the shorter side. Without random crop: resize the shorter side to S and cut
the centre. Undecodable bytes are flagged (`ok` = False), never raised: the consumer counts and
skips them (see training.data.batches).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from training.data.position import row_rng

MIN_CROP_FRACTION = 0.8


def decode_image(data: bytes, size: int, random_crop: bool, rng: np.random.Generator) -> np.ndarray:
    """Encoded image -> uint8 [size, size, 3]. Raises on undecodable / truncated bytes."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when much larger
        img = img.convert("RGB")  # forces a full decode: truncated files raise here
    w, h = img.size
    if random_crop:
        target = int(rng.integers(size, math.ceil(size / MIN_CROP_FRACTION) + 1))
    else:
        target = size
    scale = target / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)
    arr = np.asarray(img, dtype=np.uint8)
    if random_crop:
        top = int(rng.integers(0, new_h - size + 1))
        left = int(rng.integers(0, new_w - size + 1))
    else:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    return arr[top:top + size, left:left + size]


class DecodeBatch:
    """Ray Data `map_batches` function: a pyarrow batch of shard rows -> decoded numpy batch.

    In:  uid, caption, image (bytes), epoch, shard
    Out: uid, caption, epoch, shard, ok (bool), image uint8 [N, S, S, 3] (zeros where not ok)
    """

    def __init__(self, size: int, random_crop: bool, seed: int):
        self.size, self.random_crop, self.seed = size, random_crop, seed

    def __call__(self, batch) -> dict:
        uids = batch.column("uid").to_pylist()
        epochs = batch.column("epoch").to_numpy()
        images = np.zeros((len(uids), self.size, self.size, 3), dtype=np.uint8)
        ok = np.zeros(len(uids), dtype=bool)
        for i, data in enumerate(batch.column("image").to_pylist()):
            if not data:
                continue
            try:
                images[i] = decode_image(data, self.size, self.random_crop,
                                         row_rng(self.seed, "crop", int(epochs[i]), uids[i]))
                ok[i] = True
            except Exception:  # any decoder failure is a corrupt row, counted downstream
                pass
        captions = [c if c is not None else "" for c in batch.column("caption").to_pylist()]
        return {
            "uid": np.array(uids, dtype=object),
            "caption": np.array(captions, dtype=object),
            "epoch": epochs.astype(np.int64),
            "shard": batch.column("shard").to_numpy().astype(np.int64),
            "ok": ok,
            "image": images,
        }
