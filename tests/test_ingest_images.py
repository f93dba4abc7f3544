"""Stored images: img2dataset's Resizer sizes, and refusals before any pixel is decoded."""
import io

from PIL import Image

from pipeline.ingest.images import ImageProcessor


def encoded(size, fmt="JPEG"):
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def processor(**kw):
    args = dict(image_size=32, resize_mode="keep_ratio", resize_only_if_bigger=False, output_format="jpeg",
                encode_quality=90, min_image_size=0, max_pixels=1_000_000)
    args.update(kw)
    return ImageProcessor(**args)


def test_keep_ratio_sets_the_smaller_side_and_keeps_the_aspect():
    image, reason, _ = processor()(encoded((100, 50)))
    assert reason is None
    assert (image.width, image.height, image.original_width, image.original_height) == (64, 32, 100, 50)
    assert Image.open(io.BytesIO(image.data)).format == "JPEG"


def test_center_crop_gives_a_square_and_png_output_is_png():
    image, reason, _ = processor(resize_mode="center_crop", output_format="png")(encoded((100, 50), "PNG"))
    assert reason is None and (image.width, image.height) == (32, 32)
    assert Image.open(io.BytesIO(image.data)).format == "PNG"


def test_non_images_and_truncated_images_are_rejected_with_their_reason():
    assert processor()(b"<html>not an image</html>")[1] == "not_image"
    whole = encoded((64, 64))
    assert processor()(whole[: len(whole) // 2])[1] == "decode_error"
    assert processor(min_image_size=80)(whole)[1] == "too_small"


def test_decompression_bomb_is_refused_from_its_header():
    from pipeline.sample_server import oversized_png

    bomb = oversized_png(20000)  # ~50 KB file declaring 400M pixels
    assert len(bomb) < 1_000_000
    image, reason, detail = processor(max_pixels=89_478_485)(bomb)
    assert image is None and reason == "too_large" and "pixels" in detail
