"""Feature networks (Inception-v3 from a pt_inception file, a CLIP standing in), cached reference
statistics, Inception Score, precision/recall and CLIP score, on small random-weight networks."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import (ClipImageFeatures, InceptionFeatures, center_crop, clip_score, clip_scores, image_metrics,
                        inception_score, load_feature_extractor, precision_recall, reference_statistics)
from shards import UserError

from test_clip_features import tiny_open_clip  # noqa: F401 (the module-scoped fixture)


def make_pt_inception(path, seed: int = 0):
    """A randomly initialised FID Inception-v3 saved as a pt_inception state dict (torchvision's
    Inception3 names, 1008 classes, no aux head). Batch-norm statistics are set from a forward pass on
    noise so the features vary with the input; the classifier is scaled down so softmaxes are not one-hot."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, 299, 299) * 2 - 1)
        net.fc.weight.mul_(0.003)
    torch.save(net.eval().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    return make_pt_inception(tmp_path_factory.mktemp("inception") / "pt_inception-test.pth")


@pytest.fixture(scope="module")
def inception(inception_file):
    return InceptionFeatures(inception_file, batch_size=8)


def blobs(n: int, size: int, seed: int, bright: bool = False) -> np.ndarray:
    """uint8 [n, size, size, 3]: coloured rectangles on a background (darker or brighter sets)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        base = rng.integers(120, 255, 3) if bright else rng.integers(0, 100, 3)
        out[i] = base
        y, x = rng.integers(0, size // 2, 2)
        out[i, y:y + size // 2, x:x + size // 2] = rng.integers(0, 255, 3)
    return out


def write_folder(folder, images, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}{suffix}")
    return folder


# ---- Inception features --------------------------------------------------------------------------
@pytest.mark.slow
def test_inception_features_are_torch_fidelitys_network_on_the_pt_inception_weights(inception, inception_file):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = blobs(3, 48, seed=1)
    out = inception.extract(images)
    assert out.pool.shape == (3, 2048) and out.logits.shape == (3, 1008) and out.pool.dtype == np.float32
    # the file was written from torchvision's Inception3 (the pt_inception layout): torch-fidelity loads
    # it strictly, and its network on the file directly gives the same pool features and unbiased logits
    direct = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(inception_file))
    with torch.no_grad():
        pool, logits = direct(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert np.array_equal(out.pool, pool.numpy()) and np.array_equal(out.logits, logits.numpy())
    assert out.pool.std(axis=0).mean() > 0.01  # the features see the images
    d = inception.describe()
    assert d["network"] == "inception-v3" and "TensorFlow 1.x" in d["resize"]
    assert d["weights_sha256"] == __import__("shards").file_digest(str(inception_file)).sha256


def test_the_tensorflow_resize_is_not_pytorchs_bilinear():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.from_numpy(blobs(1, 64, seed=2)).permute(0, 3, 1, 2).float()
    tf = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    pt = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (tf - pt).abs().max() > 1.0
    # TF 1.x samples source pixel floor(dst * in / out) (no half-pixel offset): the first row is copied
    assert torch.equal(tf[..., 0, 0], x[..., 0, 0])


def test_bad_inception_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="missing.pth: Inception weights file not found"):
        InceptionFeatures(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="other.pth: not loadable as pt_inception"):
        InceptionFeatures(tmp_path / "other.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="evil.pth: not loadable as pt_inception"):
        InceptionFeatures(tmp_path / "evil.pth")
    with pytest.raises(UserError, match="no feature network"):
        load_feature_extractor()


# ---- reference statistics --------------------------------------------------------------------------
@pytest.mark.slow
def test_reference_statistics_are_cached_and_a_changed_extractor_never_reuses_them(
        tmp_path, inception, inception_file, tiny_open_clip):
    folder = write_folder(tmp_path / "ref", blobs(3, 40, seed=3))
    Image.fromarray(blobs(1, 40, seed=9)[0]).resize((80, 40)).save(folder / "wide.jpg")  # center-cropped
    cache = tmp_path / "cache"
    first = reference_statistics(folder, inception, 32, cache)
    assert not first.from_cache and first.count == 4 and first.features.shape == (4, 2048)
    assert first.mu.shape == (2048,) and first.sigma.shape == (2048, 2048) and first.mu.dtype == np.float64
    again = reference_statistics(folder, inception, 32, cache)
    assert again.from_cache and again.key == first.key and np.array_equal(again.sigma, first.sigma)
    assert again.description["features"]["weights_sha256"] == inception.describe()["weights_sha256"]
    # other crop size, other weights, other network, other images: new keys, computed again
    assert not reference_statistics(folder, inception, 24, cache).from_cache
    other = InceptionFeatures(make_pt_inception(tmp_path / "other-inception.pth", seed=1), batch_size=8)
    changed = reference_statistics(folder, other, 32, cache)
    assert not changed.from_cache and changed.key != first.key
    assert not np.allclose(changed.mu, first.mu)
    clip = ClipImageFeatures(tiny_open_clip["spec"])
    with_clip = reference_statistics(folder, clip, 32, cache)
    assert with_clip.description["features"]["network"] == "clip" and with_clip.mu.shape == (24,)
    Image.fromarray(blobs(1, 40, seed=11)[0]).save(folder / "new.png")
    assert not reference_statistics(folder, inception, 32, cache).from_cache
    assert len(list(cache.glob("reference-*.npz"))) == 5
    # a cache file whose content is not what its name says is not trusted
    stale = reference_statistics(folder, inception, 32, cache)
    assert stale.from_cache
    other_file = next(p for p in cache.glob("reference-*.npz") if p != stale.cache_file)
    stale.cache_file.write_bytes(other_file.read_bytes())
    assert not reference_statistics(folder, inception, 32, cache).from_cache


def test_reference_folder_errors_name_the_input(tmp_path, tiny_open_clip):
    clip = ClipImageFeatures(tiny_open_clip["spec"])
    with pytest.raises(UserError, match="nowhere: reference image folder not found"):
        reference_statistics(tmp_path / "nowhere", clip, 32, tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no images"):
        reference_statistics(tmp_path / "empty", clip, 32, tmp_path / "c")
    folder = write_folder(tmp_path / "bad", blobs(2, 16, seed=1))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        reference_statistics(folder, clip, 16, tmp_path / "c")


def test_center_crop_keeps_the_middle_and_the_size():
    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[:, 30:90] = 255  # the middle square is white, the sides black
    out = center_crop(Image.fromarray(pixels), 30)
    assert out.shape == (30, 30, 3) and out[:, 3:-3].min() > 240
    square = blobs(1, 32, seed=0)[0]
    assert np.array_equal(center_crop(Image.fromarray(square), 32), square)  # samples pass unchanged


# ---- the metrics -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_image_metrics_on_inception_features_move_with_the_samples(tmp_path, inception):
    reference = reference_statistics(write_folder(tmp_path / "ref", blobs(10, 32, seed=5)), inception, 32,
                                     tmp_path / "cache")
    close = image_metrics(inception.extract(blobs(10, 32, seed=6)), reference, inception, is_splits=2)
    far = image_metrics(inception.extract(blobs(10, 32, seed=7, bright=True)), reference, inception, is_splits=2)
    assert 0 < close["fid"] < far["fid"]
    assert close["precision"] > far["precision"] and 0 <= far["recall"] <= 1
    assert close["inception_score"] >= 1.0 and close["features"]["network"] == "inception-v3"
    assert close["notes"] == []


def test_clip_stands_in_when_no_inception_weights_are_given_and_says_so(tmp_path, tiny_open_clip):
    clip = load_feature_extractor(clip=tiny_open_clip["spec"])
    assert isinstance(clip, ClipImageFeatures)
    reference = reference_statistics(write_folder(tmp_path / "ref", blobs(10, 32, seed=5)), clip, 32,
                                     tmp_path / "cache")
    metrics = image_metrics(clip.extract(blobs(10, 32, seed=6)), reference, clip)
    assert metrics["features"]["network"] == "clip" and metrics["features"]["family"] == "open_clip"
    assert metrics["inception_score"] is None and "no class logits" in metrics["notes"][0]
    assert metrics["fid"] > 0 and metrics["precision"] is not None
    reference.description["features_digest"] = "0" * 64  # as if computed with another network
    with pytest.raises(ValueError, match="reference statistics were computed with other features"):
        image_metrics(clip.extract(blobs(10, 32, seed=6)), reference, clip)


def test_clip_score_is_logit_scale_times_cosine_without_a_clamp(tiny_open_clip):
    import open_clip

    clip = ClipImageFeatures(tiny_open_clip["spec"])
    assert clip.logit_scale() == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial temperature
    images = blobs(3, 32, seed=4)
    captions = ["a red square", "a blue circle", "a green star"]
    model = tiny_open_clip["model"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        zi = model.encode_image((x - mean) / std)
        zt = model.encode_text(open_clip.get_tokenizer("tiny-test-clip")(captions))
    expected = (1 / 0.07) * torch.nn.functional.cosine_similarity(zi, zt).mean().item()
    assert clip_score(images, captions, clip) == pytest.approx(expected, rel=1e-4)
    # no clamp: opposite embeddings score negative
    assert clip_scores([[1.0, 0.0]], [[-2.0, 0.0]], 100.0).tolist() == [-100.0]


def test_inception_score_matches_the_formula_and_its_extremes():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 10)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for part in np.split(p, 4):
        q = part.mean(0)
        scores.append(np.exp((part * (np.log(part) - np.log(q))).sum(1).mean()))
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)
    one_hot = np.eye(10)[np.arange(40) % 10] * 50  # confident and evenly spread: IS = number of classes
    assert inception_score(one_hot, splits=4)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.zeros((40, 10)), splits=4)[0] == pytest.approx(1.0)


def brute_force_precision_recall(real, fake, k):
    d_rr = ((real[:, None] - real[None]) ** 2).sum(-1)
    d_ff = ((fake[:, None] - fake[None]) ** 2).sum(-1)
    d_rf = ((real[:, None] - fake[None]) ** 2).sum(-1)
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    precision = (d_rf <= r_real[:, None]).any(axis=0).mean()
    recall = (d_rf <= r_fake[None, :]).any(axis=1).mean()
    return precision, recall


@pytest.mark.parametrize("block_size", [7, 64, 4096])
def test_precision_recall_equals_the_definition_for_any_block_size(block_size):
    rng = np.random.default_rng(3)
    real = rng.standard_normal((150, 5))
    fake = rng.standard_normal((120, 5)) * 1.3 + 0.4
    out = precision_recall(real, fake, k=3, block_size=block_size)
    precision, recall = brute_force_precision_recall(real, fake, 3)
    assert (out.precision, out.recall) == pytest.approx((precision, recall), abs=1e-9)
    assert 0 < out.precision < 1 and 0 < out.recall < 1
    same = precision_recall(real, real, k=3, block_size=block_size)
    assert (same.precision, same.recall) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than k=3 points"):
        precision_recall(real[:3], fake)
