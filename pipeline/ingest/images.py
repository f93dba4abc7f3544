"""Downloaded bytes -> stored image, with img2dataset's Resizer doing the decode/resize/encode.

Before the Resizer decodes anything, the header is read (PIL, no pixel decode) so that
non-images and decompression bombs are refused by their declared size.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Optional


ENCODE_FORMATS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass
class StoredImage:
    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int


class ImageProcessor:
    """Callable: bytes -> (StoredImage | None, reason | None, detail). Not thread-safe
    (img2dataset's Resizer redirects file descriptors 1 and 2 while it decodes)."""

    def __init__(self, *, image_size: int, resize_mode: str, resize_only_if_bigger: bool,
                 output_format: str, encode_quality: int, min_image_size: int, max_pixels: int):
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
        from PIL import Image

        from pipeline.ingest import import_img2dataset

        Resizer = import_img2dataset("resizer").Resizer

        self.max_pixels = max_pixels
        self._image = Image
        quality = encode_quality
        if output_format == "png":  # cv2 PNG "quality" is a 0-9 compression level
            quality = min(9, max(0, round((100 - encode_quality) / 11)))
        self.resizer = Resizer(
            image_size=image_size,
            resize_mode=resize_mode,
            resize_only_if_bigger=resize_only_if_bigger,
            encode_format=ENCODE_FORMATS[output_format],
            encode_quality=quality,
            min_image_size=min_image_size,
            max_image_area=max_pixels,
        )

    def check_header(self, data: bytes) -> Optional[tuple[str, str]]:
        """(reason, detail) if the bytes are not an image or declare too many pixels."""
        Image = self._image
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    width, height, fmt = img.width, img.height, img.format
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            return "too_large", str(e)[:200]
        except Image.UnidentifiedImageError:
            return "not_image", f"not a recognised image ({len(data)} bytes, starts {data[:8]!r})"
        except Exception as e:  # damaged header
            return "decode_error", f"header: {e}"[:200]
        if width * height > self.max_pixels:
            return "too_large", f"{width}x{height} pixels > limit {self.max_pixels}"
        if fmt == "JPEG" and data.rfind(b"\xff\xd9", max(0, len(data) - 65536)) < 0:
            # OpenCV decodes a cut-off JPEG into a grey-padded image without an error.
            return "decode_error", "truncated JPEG (no end-of-image marker)"
        return None

    def __call__(self, data: bytes):
        problem = self.check_header(data)
        if problem:
            return None, problem[0], problem[1]
        img, width, height, original_width, original_height, error = self.resizer(io.BytesIO(data))
        if error is not None:
            low = error.lower()
            if "too small" in low:
                return None, "too_small", error
            if "too large" in low:
                return None, "too_large", error
            return None, "decode_error", error
        return StoredImage(img, width, height, original_width, original_height), None, None
