"""The paper's three-crop CLIP features (filtering.three_crop, clip_features) on a real open_clip model.

The open_clip model is a small custom architecture (open_clip's own config format) with random
weights the test saves to a file, loaded through the same `ARCH=WEIGHTS` path a user gives.
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from filtering.three_crop import crop_boxes, decode_three_crops, resized_size, three_crops
from shards import UserError

TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
BANDS = [(230, 30, 30), (30, 200, 30), (30, 30, 220)]  # red, green, blue thirds of the longer side


def banded(width: int, height: int) -> Image.Image:
    """An image whose longer side is split in three equal colour bands (start, middle, end)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    long_side = max(width, height)
    for i, colour in enumerate(BANDS):
        sl = slice(i * long_side // 3, (i + 1) * long_side // 3)
        if width >= height:
            pixels[:, sl] = colour
        else:
            pixels[sl, :] = colour
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """(spec, open_clip model with the same weights): a random-weights model saved to a file."""
    import open_clip

    root = tmp_path_factory.mktemp("open-clip")
    config = root / "tiny-test-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip", device="cpu").eval()
    weights = root / "tiny-test-clip.bin"
    torch.save(model.state_dict(), weights)
    return {"spec": f"{config}={weights}", "model": model, "config": config, "weights": weights, "root": root}


@pytest.fixture(scope="module")
def features(tiny_open_clip):
    from filtering.clip_features import load_clip_features

    return load_clip_features(tiny_open_clip["spec"], "cpu", batch_size=2)


# ---- geometry --------------------------------------------------------------------------------------
def test_the_smaller_side_is_resized_to_the_crop_size():
    assert resized_size(640, 480, 224) == (299, 224)
    assert resized_size(480, 640, 224) == (224, 299)
    assert resized_size(100, 100, 32) == (32, 32)
    assert resized_size(30, 20, 224) == (336, 224)  # small images are scaled up


def test_crops_sit_at_both_ends_and_the_middle_of_the_longer_side():
    assert crop_boxes(300, 100, 100) == [(0, 0, 100, 100), (100, 0, 200, 100), (200, 0, 300, 100)]
    assert crop_boxes(50, 125, 50) == [(0, 0, 50, 50), (0, 37, 50, 87), (0, 75, 50, 125)]
    assert crop_boxes(64, 64, 64) == [(0, 0, 64, 64)] * 3


@pytest.mark.parametrize("width,height", [(600, 200), (90, 270)])  # wide, tall; resized by 1/6 and 1/3
def test_each_crop_sees_its_own_third_of_a_wide_or_tall_image(width, height):
    crops = three_crops(banded(width, height), 32)
    assert crops.shape == (3, 32, 32, 3) and crops.dtype == np.uint8
    for crop, colour in zip(crops, BANDS):
        centre = crop[12:20, 12:20].reshape(-1, 3).astype(int)
        assert np.abs(centre - colour).max() <= 2, (colour, centre.mean(axis=0))


def test_decoding_gives_the_same_crops_as_the_decoded_image_and_rejects_bad_bytes():
    image = banded(120, 40)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    np.testing.assert_array_equal(decode_three_crops(buf.getvalue(), 20), three_crops(image, 20))
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=95)
    with pytest.raises(OSError):
        decode_three_crops(jpeg.getvalue()[: len(jpeg.getvalue()) // 2], 20)  # truncated
    with pytest.raises(Exception):
        decode_three_crops(b"not an image at all", 20)


# ---- features on a real open_clip model ------------------------------------------------------------
def _reference_feature(model, image: Image.Image, size: int) -> torch.Tensor:
    """The recipe written out: open_clip's normalisation, per-crop unit embeddings, mean, unit norm."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    x = torch.from_numpy(three_crops(image, size)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        z = model.encode_image(x)
    z = z / z.norm(dim=-1, keepdim=True)
    pooled = z.mean(dim=0)
    return pooled / pooled.norm()


def test_open_clip_features_are_the_mean_pooled_normalised_crop_embeddings(features, tiny_open_clip):
    images = [banded(96, 32), banded(40, 100), Image.new("RGB", (50, 50), (10, 120, 200))]
    z = features.encode_images(images)  # batch_size 2: two forward passes
    assert z.shape == (3, 24) and z.dtype == torch.float32 and features.dim == 24 and features.crop_size == 32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    for row, image in zip(z, images):
        torch.testing.assert_close(row, _reference_feature(tiny_open_clip["model"], image, 32), atol=1e-5, rtol=1e-4)
    # the crops differ, so pooling matters: a wide image's feature is not its first crop's
    first_crop_only = features.encode_images([Image.fromarray(three_crops(images[0], 32)[0])])[0]
    assert float(z[0] @ first_crop_only) < 0.9999


def test_text_features_are_open_clips_normalised_text_embeddings(features, tiny_open_clip):
    import open_clip

    texts = ["a knife", "a red circle on a blue background", ""]
    q = features.encode_text(texts)
    assert q.shape == (3, 24)
    tokenizer = open_clip.get_tokenizer("tiny-test-clip")
    with torch.no_grad():
        ref = tiny_open_clip["model"].encode_text(tokenizer(texts))
    torch.testing.assert_close(q, ref / ref.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_describe_names_the_architecture_and_the_exact_weights(features, tiny_open_clip):
    from filtering.clip_features import load_clip_features
    from shards import file_digest

    d = features.describe()
    assert d["family"] == "open_clip" and d["dim"] == 24 and d["crop_size"] == 32
    assert d["weights_sha256"] == file_digest(tiny_open_clip["weights"]).sha256
    assert d["arch"] == str(tiny_open_clip["config"].resolve())
    again = load_clip_features(d["exact_spec"], "cpu")
    image = banded(70, 30)
    torch.testing.assert_close(again.encode_images([image]), features.encode_images([image]))


# ---- bad input: one line naming it -------------------------------------------------------------------
def test_bad_clip_specs_are_user_errors_naming_the_input(tiny_open_clip, tmp_path):
    from filtering.clip_features import load_clip_features
    from filtering.clip_source import resolve_clip

    config = tiny_open_clip["config"]
    with pytest.raises(UserError, match=r"needs a local weights file.*ViT-B-16-quickgelu=PATH"):
        resolve_clip("ViT-B-16")
    with pytest.raises(UserError, match=r"/nowhere/w\.bin: CLIP weights file not found"):
        resolve_clip("ViT-B-16=/nowhere/w.bin")
    with pytest.raises(UserError, match=r"'ViT-Nope': not an open_clip model"):
        resolve_clip(f"ViT-Nope={tiny_open_clip['weights']}")
    with pytest.raises(UserError, match=r"neither a CLIP checkpoint"):
        resolve_clip("no-such-thing")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=rf"{garbage}: not loadable as"):
        load_clip_features(f"{config}={garbage}", "cpu")
    other = dict(TINY_OPEN_CLIP, embed_dim=16)  # a file of another architecture
    other_config = tmp_path / "other-test-clip.json"
    other_config.write_text(json.dumps(other))
    with pytest.raises(UserError, match=rf"{tiny_open_clip['weights']}: not loadable as .*other-test-clip"):
        load_clip_features(f"{other_config}={tiny_open_clip['weights']}", "cpu")


def test_openai_style_torchscript_weights_load_into_the_quickgelu_variant_only(tiny_open_clip):
    """OpenAI releases CLIP as TorchScript archives and trained it with QuickGELU."""
    import open_clip

    from filtering.clip_features import load_clip_features
    from filtering.clip_source import resolve_clip

    root = tiny_open_clip["root"]
    quick = root / "tiny-test-clip-quickgelu.json"
    quick.write_text(json.dumps(dict(TINY_OPEN_CLIP, quick_gelu=True)))
    open_clip.add_model_config(quick)
    torch.manual_seed(1)
    scripted = open_clip.create_model("tiny-test-clip-quickgelu", device="cpu", jit=True)
    archive = root / "openai-style.pt"
    torch.jit.save(scripted, str(archive))
    with zipfile.ZipFile(archive) as z:
        assert any(n.endswith("constants.pkl") for n in z.namelist())

    with pytest.raises(UserError, match=r'QuickGELU variant: set "quick_gelu": true in .*tiny-test-clip\.json'):
        resolve_clip(f"{tiny_open_clip['config']}={archive}")
    with pytest.raises(UserError, match=rf"QuickGELU variant: use ViT-B-16-quickgelu={archive}"):
        resolve_clip(f"ViT-B-16={archive}")

    features = load_clip_features(f"{quick}={archive}", "cpu")
    eager = open_clip.create_model("tiny-test-clip-quickgelu", device="cpu").eval()
    eager.load_state_dict({k: v for k, v in scripted.state_dict().items() if k in eager.state_dict()})
    image = banded(80, 40)
    torch.testing.assert_close(features.encode_images([image])[0], _reference_feature(eager, image, 32),
                               atol=1e-5, rtol=1e-4)
