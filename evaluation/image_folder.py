"""Reference and sample images as the metrics see them: center-cropped squares of one size.

    paths = list_images("coco-val/")                   # sorted, recursive; UserError when none
    for batch in iter_image_batches(paths, 256, 64):    # uint8 [<=64, 256, 256, 3]
        ...

`center_crop(image, size)` is the preprocessing of the ADM/GLIDE evaluation (guided-diffusion's
center_crop_arr): halve the image with a box filter while its smaller side is at least twice `size`,
resize it bicubically so the smaller side is `size`, then cut the centred `size` x `size` square.
Samples are squares of the model's size already, so the same call leaves them as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

import shards as sh

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: the centred square of `image` with its smaller side resized to `size`."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    target = tuple(max(size, round(side * scale)) for side in image.size)
    if target != image.size:
        image = image.resize(target, resample=Image.BICUBIC)
    pixels = np.asarray(image)
    top = (pixels.shape[0] - size) // 2
    left = (pixels.shape[1] - size) // 2
    return pixels[top:top + size, left:left + size]


def list_images(folder: str | Path) -> list[Path]:
    """Image files below `folder` (by suffix, recursive, hidden folders skipped), sorted by path."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise sh.UserError(f"{folder}: reference image folder not found")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise sh.UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return paths


def load_image(path: Path, size: int) -> np.ndarray:
    """center_crop of one image file; UserError naming the file when it does not decode."""
    try:
        with Image.open(path) as image:
            image.load()
            return center_crop(image, size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise sh.UserError(f"{path}: not a readable image ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") \
            from None


def iter_image_batches(paths: Sequence[Path], size: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 [<= batch_size, size, size, 3] batches of center-cropped images, in `paths` order."""
    for start in range(0, len(paths), batch_size):
        yield np.stack([load_image(p, size) for p in paths[start:start + batch_size]])
