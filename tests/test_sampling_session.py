"""training.sampling.session: models loaded once, the CLI's images in-process and in a Ray actor."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_checkpoint
from shards import UserError
from training.sampling.session import SampleSettings, SamplingSession, SessionConfig


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints with trained-like (randomized) weights: a fresh model's zero output convs
    would make every comparison below trivially equal."""
    root = tmp_path_factory.mktemp("session-ckpt")
    up = dict(image_size=64, noise_schedule="linear")
    return {
        "base": str(save_tiny_checkpoint(root / "base", randomize_seed=1)),
        "inpaint": str(save_tiny_checkpoint(root / "inpaint", kind="base-inpaint", randomize_seed=2)),
        "up": str(save_tiny_checkpoint(root / "up", kind="upsampler", randomize_seed=3, **up)),
        "up-inpaint": str(save_tiny_checkpoint(root / "up-inpaint", kind="upsampler-inpaint", randomize_seed=4, **up)),
        "clip": str(save_tiny_checkpoint(root / "clip", config="tiny-clip", randomize_seed=5)),
    }


def _cli_output(out_dir):
    """(uint8 images [N, H, W, 3] from the PNGs, settings.json) of a `glide sample -o` folder."""
    settings = json.loads((out_dir / "settings.json").read_text())
    images = np.stack([np.asarray(Image.open(out_dir / i["file"]).convert("RGB")) for i in settings["images"]])
    return images, settings


def _same_settings(samples, cli_settings, cli_only):
    ours = {k: v for k, v in samples.settings.items() if k != "seconds"}
    theirs = {k: v for k, v in cli_settings.items() if k not in {"seconds", "command", "images", *cli_only}}
    assert ours == theirs
    assert samples.prompts == [i["prompt"] for i in cli_settings["images"]]


def test_text_to_image_with_upsampler_equals_what_the_cli_writes(glide_cli, checkpoints, tmp_path):
    prompts = ["a red cube", "a blue ball", "a green cone"]
    (tmp_path / "captions.txt").write_text("\n".join(prompts) + "\n")
    session = SamplingSession(SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up"], device="cpu"))
    settings = SampleSettings(steps="3", guidance=2.5, seed=11, batch_size=2, upsampler_steps="2")
    samples = session.text_to_image(prompts, settings)
    assert samples.images.shape == (3, 3, 64, 64) and samples.base_images.shape == (3, 3, 32, 32)
    assert glide_cli("sample", "--model", checkpoints["base"], "--prompts", tmp_path / "captions.txt",
                     "--steps", "3", "--guidance", "2.5", "--seed", "11", "--batch-size", "2",
                     "--upsampler", checkpoints["up"], "--upsampler-steps", "2", "--no-progress",
                     "-o", tmp_path / "out") == 0
    images, cli_settings = _cli_output(tmp_path / "out")
    assert np.array_equal(samples.uint8(), images)
    assert images.std() > 10  # trained-like weights: real images, not a constant
    _same_settings(samples, cli_settings, {"per_prompt"})


def test_inpainting_and_sdedit_equal_what_the_cli_writes(glide_cli, checkpoints, tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), dtype=bool)
    mask[20:] = True  # regenerate the bottom half
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    settings = SampleSettings(steps="2", seed=5, batch_size=2, upsampler_steps="2")
    common = ["--steps", "2", "--seed", "5", "--batch-size", "2", "--upsampler-steps", "2", "--no-progress"]

    inpainter = SamplingSession(SessionConfig(base=checkpoints["inpaint"], upsampler=checkpoints["up-inpaint"]))
    ours = inpainter.inpaint(photo, mask, "a hat", settings, n=2)  # arrays: the same pixels as the files
    assert glide_cli("inpaint", "--model", checkpoints["inpaint"], "--upsampler", checkpoints["up-inpaint"],
                     "--image", tmp_path / "photo.png", "--mask", tmp_path / "mask.png", "--prompt", "a hat",
                     *common, "-o", tmp_path / "inpaint") == 0
    images, cli_settings = _cli_output(tmp_path / "inpaint")
    assert np.array_equal(ours.uint8(), images) and ours.settings["mode"] == "finetuned"
    _same_settings(ours, cli_settings, {"image", "mask"})

    editor = SamplingSession(SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up"]))
    ours = editor.sdedit(tmp_path / "photo.png", "a castle", settings, n=2, strength=0.5)
    assert glide_cli("sdedit", "--model", checkpoints["base"], "--upsampler", checkpoints["up"],
                     "--image", tmp_path / "photo.png", "--prompt", "a castle", "--strength", "0.5",
                     *common, "-o", tmp_path / "sdedit") == 0
    images, cli_settings = _cli_output(tmp_path / "sdedit")
    assert np.array_equal(ours.uint8(), images)
    _same_settings(ours, cli_settings, {"image"})


def test_each_model_is_loaded_once_however_much_is_sampled(checkpoints, monkeypatch):
    import training.api

    loads = []
    real_load = training.api.load

    def counting_load(path, **kwargs):
        loads.append(path)
        return real_load(path, **kwargs)

    monkeypatch.setattr(training.api, "load", counting_load)
    session = SamplingSession(SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up"],
                                            clip=checkpoints["clip"]))
    settings = SampleSettings(steps="2", batch_size=2, upsampler_steps="2", seed=3)
    first = session.text_to_image(["a", "b", "c", "d", "e"], settings)  # 3 batches
    again = session.text_to_image(["a", "b", "c", "d", "e"], settings)
    session.text_to_image(["f"], SampleSettings(steps="ddim3", upsample=False))
    session.sdedit(np.zeros((8, 8, 3), np.uint8), "g", settings, n=3, strength=1.0)
    assert sorted(loads) == sorted([checkpoints["base"], checkpoints["up"], checkpoints["clip"]])
    # same seed, same images (deterministic); the CLIP guides (default scale 3, guidance then 1)
    assert torch.equal(first.images, again.images) and first.settings["clip_guidance"] == 3.0
    assert first.settings["guidance"] == 1.0
    other = session.text_to_image(["a", "b", "c", "d", "e"], SampleSettings(steps="2", batch_size=2,
                                                                           upsampler_steps="2", seed=4))
    assert not torch.equal(first.images, other.images)


def test_progress_counts_every_step_of_every_batch_on_one_line(checkpoints, capsys):
    session = SamplingSession(SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up"]), progress=True)
    session.text_to_image(["a", "b", "c"], SampleSettings(steps="3", batch_size=2, upsampler_steps="2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sampling: 10/10 steps (100%)")  # 2 batches x (3 base + 2 upsampler steps)
    SamplingSession(SessionConfig(base=checkpoints["base"])).text_to_image(["a"], SampleSettings(steps="2"))
    assert capsys.readouterr().err == ""


def test_bad_models_and_settings_are_user_errors_naming_the_input(checkpoints):
    cases = [
        (lambda: SessionConfig(base=checkpoints["base"], precision="fp8"), "precision"),
        (lambda: SampleSettings(batch_size=0), "batch_size"),
        (lambda: SampleSettings(sampler="euler"), "sampler"),
        (lambda: SamplingSession(SessionConfig(base=checkpoints["up"])), "'upsampler' model, not a base model"),
        (lambda: SamplingSession(SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up-inpaint"])),
         "needs an inpainting base"),
        (lambda: SamplingSession(SessionConfig(base=checkpoints["base"], clip=checkpoints["up"])), "not a noised CLIP"),
        (lambda: SamplingSession(SessionConfig(base=checkpoints["inpaint"])).text_to_image(["x"]), "text-to-image"),
        (lambda: SamplingSession(SessionConfig(base=checkpoints["base"])).text_to_image(
            ["x"], SampleSettings(steps="abc")), "diffusion settings"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: SamplingSession(SessionConfig(base=checkpoints["base"], precision="fp16")), "CUDA"))
    for make, needle in cases:
        with pytest.raises(UserError, match=needle):
            make()


@pytest.mark.slow
@pytest.mark.integration
def test_a_session_in_a_ray_actor_samples_what_it_samples_in_process(checkpoints):
    import logging

    import ray

    config = SessionConfig(base=checkpoints["base"], upsampler=checkpoints["up"], device="cpu")
    settings = SampleSettings(steps="3", seed=21, batch_size=2, upsampler_steps="2")
    prompts = ["a red cube", "a blue ball", "a green cone"]
    local = SamplingSession(config).text_to_image(prompts, settings)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        actor = ray.remote(num_cpus=1)(SamplingSession).remote(config)  # the models load inside the actor
        remote = ray.get(actor.text_to_image.remote(prompts, settings), timeout=300)
    finally:
        ray.shutdown()
    assert np.array_equal(remote.uint8(), local.uint8())
    torch.testing.assert_close(remote.images, local.images, rtol=0, atol=1e-5)
    assert remote.settings["model"] == local.settings["model"] and remote.prompts == prompts
