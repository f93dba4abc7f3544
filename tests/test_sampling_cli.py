"""`glide sample | inpaint | sdedit` on tiny real checkpoints (training.checkpoint.save_checkpoint)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_glide, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "base": save_tiny_checkpoint(root / "base"),
        "inpaint": save_tiny_checkpoint(root / "inpaint", kind="base-inpaint"),
        "up": save_tiny_checkpoint(root / "up", kind="upsampler", image_size=64, noise_schedule="linear"),
        "clip": save_tiny_checkpoint(root / "clip", config="tiny-clip"),
        "up-inpaint": save_tiny_checkpoint(root / "up-inpaint", kind="upsampler-inpaint", image_size=64,
                                           noise_schedule="linear"),
    }


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sample_writes_pngs_grid_and_settings_and_is_reproducible(glide_cli, checkpoints, tmp_path, capsys):
    args = ["sample", "--model", checkpoints["base"], "--prompt", "a red cube", "--steps", "3",
            "--batch-size", "2", "--seed", "3", "--guidance", "4"]
    assert glide_cli(*args, "-o", tmp_path / "a") == 0
    assert "sampling" in capsys.readouterr().err  # progress bar on stderr
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["grid.png", "sample-0000.png", "sample-0001.png", "settings.json"]
    assert Image.open(tmp_path / "a" / "sample-0000.png").size == (32, 32)
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["guidance"] == 4 and settings["seed"] == 3 and settings["model_step"] == 7
    assert [i["prompt"] for i in settings["images"]] == ["a red cube"] * 2
    assert glide_cli(*args, "--no-progress", "-o", tmp_path / "b") == 0
    for name in ("sample-0000.png", "sample-0001.png"):
        assert np.array_equal(_pixels(tmp_path / "a" / name), _pixels(tmp_path / "b" / name))
    assert not np.array_equal(_pixels(tmp_path / "a" / "sample-0000.png"), _pixels(tmp_path / "a" / "sample-0001.png"))


def test_sample_prompts_file_in_batches_then_upsampled(glide_cli, checkpoints, tmp_path):
    prompts = tmp_path / "captions.txt"
    prompts.write_text("a red cube\n\na blue ball\na green cone\n")
    out = tmp_path / "out"
    assert glide_cli("sample", "--model", checkpoints["base"], "--prompts", prompts, "--steps", "ddim2",
                     "--batch-size", "2", "--guidance", "1", "--upsampler", checkpoints["up"], "--upsampler-steps", "2",
                     "--no-progress", "-o", out) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert [i["prompt"] for i in settings["images"]] == ["a red cube", "a blue ball", "a green cone"]
    assert settings["sampler"] == "ddim" and settings["upsample_temp"] == 0.997
    assert settings["low_res_consistency"] is True
    assert Image.open(out / "sample-0002.png").size == (64, 64)
    # the same draws without holding the upsampler to the base images: recorded, and other pixels
    assert glide_cli("sample", "--model", checkpoints["base"], "--prompts", prompts, "--steps", "ddim2",
                     "--batch-size", "2", "--guidance", "1", "--upsampler", checkpoints["up"], "--upsampler-steps", "2",
                     "--no-low-res-consistency", "--no-progress", "-o", tmp_path / "free") == 0
    assert json.loads((tmp_path / "free" / "settings.json").read_text())["low_res_consistency"] is False
    assert not np.array_equal(_pixels(out / "sample-0000.png"), _pixels(tmp_path / "free" / "sample-0000.png"))


def test_sample_with_clip_guidance_follows_the_clip_gradient(glide_cli, checkpoints, tmp_path):
    args = ["sample", "--model", checkpoints["base"], "--prompt", "a red cube", "--steps", "3",
            "--batch-size", "1", "--no-progress"]
    assert glide_cli(*args, "-o", tmp_path / "plain", "--guidance", "1") == 0
    assert glide_cli(*args, "-o", tmp_path / "clip", "--clip", checkpoints["clip"], "--clip-guidance", "50") == 0
    settings = json.loads((tmp_path / "clip" / "settings.json").read_text())
    assert settings["clip_guidance"] == 50 and settings["guidance"] == 1  # CLIP alone, as glide's notebook
    plain, guided = _pixels(tmp_path / "plain" / "sample-0000.png"), _pixels(tmp_path / "clip" / "sample-0000.png")
    assert np.abs(plain - guided).mean() > 1  # same seed: the difference is the CLIP gradient
    assert glide_cli(*args, "-o", tmp_path / "x", "--clip", checkpoints["base"]) == 2


def _image_and_mask(tmp_path, size=32):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 2:] = 255  # white: regenerate the bottom half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return image


@pytest.mark.parametrize("kind,mode", [("base", "replace"), ("inpaint", "finetuned")])
def test_inpaint_keeps_the_black_region_of_the_mask(glide_cli, checkpoints, tmp_path, kind, mode):
    image = _image_and_mask(tmp_path)
    out = tmp_path / "out"
    assert glide_cli("inpaint", "--model", checkpoints[kind], "--image", tmp_path / "photo.png",
                     "--mask", tmp_path / "mask.png", "--prompt", "a hat", "--steps", "3",
                     "--batch-size", "2", "--no-progress", "-o", out) == 0
    assert json.loads((out / "settings.json").read_text())["mode"] == mode
    result = _pixels(out / "sample-0001.png")
    assert np.abs(result[:16] - image[:16]).max() <= 1  # kept (up to 8-bit rounding)
    assert np.abs(result[16:] - image[16:]).mean() > 10  # regenerated


def test_inpaint_then_inpainting_upsampler_keeps_the_known_region_at_full_size(glide_cli, checkpoints, tmp_path):
    image = _image_and_mask(tmp_path, size=64)
    out = tmp_path / "out"
    assert glide_cli("inpaint", "--model", checkpoints["inpaint"], "--image", tmp_path / "photo.png",
                     "--mask", tmp_path / "mask.png", "--prompt", "a hat", "--steps", "2", "--batch-size", "1",
                     "--upsampler", checkpoints["up-inpaint"], "--upsampler-steps", "2", "--no-progress",
                     "-o", out) == 0
    result = _pixels(out / "sample-0000.png")
    assert result.shape == (64, 64, 3)
    assert np.abs(result[:32] - image[:32]).max() <= 1
    assert np.abs(result[32:] - image[32:]).mean() > 10


def test_sdedit_strength_controls_how_much_of_the_sketch_survives(glide_cli, checkpoints, tmp_path):
    image = _image_and_mask(tmp_path)
    diffs = {}
    for strength in ("0.1", "1.0"):
        out = tmp_path / strength
        assert glide_cli("sdedit", "--model", checkpoints["base"], "--image", tmp_path / "photo.png",
                         "--prompt", "a castle", "--steps", "5", "--strength", strength, "--batch-size", "1",
                         "--no-progress", "-o", out) == 0
        diffs[strength] = np.abs(_pixels(out / "sample-0000.png") - image).mean()
    settings = json.loads((tmp_path / "0.1" / "settings.json").read_text())
    assert settings["start_step"] == 0 and settings["strength"] == 0.1
    assert diffs["0.1"] < 0.5 * diffs["1.0"]


def test_bad_inputs_exit_2_with_one_line(glide_cli, checkpoints, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "notimage.png").write_text("hello")
    _image_and_mask(tmp_path)
    base = ["--model", checkpoints["base"], "--no-progress", "-o", tmp_path / "o"]
    cases = [
        (["sample", "--prompt", "x", "--steps", "abc", *base], "diffusion settings"),
        (["sample", "--prompts", tmp_path / "empty.txt", *base], "empty.txt"),
        (["sample", "--prompt", "x", "--upsampler", checkpoints["base"], *base], "not an upsampler"),
        (["sample", "--prompt", "x", "--model", checkpoints["up"], "-o", tmp_path / "o"], "'upsampler' model"),
        (["sdedit", "--image", tmp_path / "notimage.png", "--prompt", "x", *base], "notimage.png"),
        (["sdedit", "--image", tmp_path / "missing.png", "--prompt", "x", *base], "missing.png"),
        (["sdedit", "--image", tmp_path / "photo.png", "--prompt", "x", "--strength", "0", *base], "strength"),
        (["sample", "--prompt", "x", "--device", "nonsense", *base], "--device"),
    ]
    for argv, needle in cases:
        assert glide_cli(*argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert needle in err[-1] and err[-1].startswith("glide: error:"), (argv, err)


def test_missing_checkpoint_is_a_one_line_error_in_a_real_process(tmp_path):
    proc = run_glide("sample", "--model", tmp_path / "nope", "--prompt", "x", "-o", tmp_path / "o", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"glide: error: {tmp_path / 'nope'}: no such checkpoint or run folder"]
