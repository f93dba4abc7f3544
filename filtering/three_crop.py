"""The paper's three-crop view of an image (GLIDE Appendix F.1), on CPU.

Resize so the smaller side is `size` (keeping the aspect ratio), then take three `size` x `size`
crops along the longer side: at its start, its middle and its end. A square image gives three
identical crops. The CLIP image encoder sees all three and their features are mean-pooled
(filtering.clip_features), so content near either end of a wide or tall image is not cropped away.

    crops = decode_three_crops(jpeg_bytes, 224)   # uint8 [3, 224, 224, 3] (crop, row, column, RGB)
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the smaller side `size` and the longer one scaled to match (>= size)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def crop_boxes(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    """The three (left, top, right, bottom) crops of an image already resized to `resized_size`:
    start, middle and end of the longer side (all three the same for a square image)."""
    long_side = max(width, height)
    offsets = (0, (long_side - size) // 2, long_side - size)
    if width >= height:
        return [(o, 0, o + size, size) for o in offsets]
    return [(0, o, size, o + size) for o in offsets]


def three_crops(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [3, size, size, 3]: the three crops of an RGB image (bicubic resize, as CLIP's preprocessing)."""
    image = image.convert("RGB")
    w, h = resized_size(image.width, image.height, size)
    # reducing_gap: a box pre-shrink for large downscales, then bicubic (within 1/255 of plain bicubic)
    resized = image.resize((w, h), Image.BICUBIC, reducing_gap=3.0) if (w, h) != image.size else image
    pixels = np.asarray(resized)
    return np.stack([pixels[top:bottom, left:right] for left, top, right, bottom in crop_boxes(w, h, size)])


def decode_three_crops(data: bytes, size: int) -> np.ndarray:
    """Decode encoded image bytes and take `three_crops`. Raises (OSError, ValueError, PIL's
    DecompressionBombError...) on bytes that are not a whole, decodable image."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result stays >= the resize target:
            # most of the decode time for large photos, with no visible change at the crop size.
            target = resized_size(image.width, image.height, size)
            image.draft("RGB", target)
        image.load()  # decode now: a truncated file fails here, inside the caller's error handling
        return three_crops(image, size)
