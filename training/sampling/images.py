"""Image tensors <-> files: loading inputs for editing, writing samples and grids (PIL).

Tensors are [N, 3, H, W] floats in [-1, 1]; masks [N, 1, H, W] in {0, 1}.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from shards import UserError


def _open(path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: cannot read image: {e}") from None


def as_pil(source) -> Image.Image:
    """An image file path, a PIL image, or an array ([H, W, 3] / [H, W]; uint8, or bool / floats in
    [0, 1] as black..white) -> PIL image. Arrays let a caller (evaluation) pass decoded images."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype == bool or np.issubdtype(array.dtype, np.floating):
            array = (np.clip(array.astype(np.float32), 0, 1) * 255).round()
        return Image.fromarray(array.astype(np.uint8))
    return _open(source)


def _center_square(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


def load_image(source, size: int) -> torch.Tensor:
    """An image (`as_pil`'s inputs), centre-cropped to a square and resized to size x size:
    [1, 3, size, size] in [-1, 1]."""
    image = _center_square(as_pil(source).convert("RGB"), size)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def load_regenerate_mask(source, size: int) -> torch.Tensor:
    """A mask image (`as_pil`'s inputs) where WHITE (> 50% grey) marks pixels to regenerate ->
    [1, 1, size, size] {0, 1} (1 = regenerate). An alpha channel, if present, is ignored."""
    image = _center_square(as_pil(source).convert("L"), size)
    array = (np.asarray(image, dtype=np.float32) > 127.5).astype(np.float32)
    return torch.from_numpy(array)[None, None]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """[N, H, W, 3] uint8 -> one image with the samples in rows of `columns` (default: ~square)."""
    n, h, w, _ = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = img
    return Image.fromarray(grid)


def save_samples(images: torch.Tensor, out_dir, prefix: str = "sample") -> list[Path]:
    """Write each image as OUT/<prefix>-0000.png and the grid as OUT/grid.png; returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = to_uint8(images)
    paths = []
    for i, array in enumerate(arrays):
        path = out / f"{prefix}-{i:04d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    make_grid(arrays).save(out / "grid.png")
    return paths
