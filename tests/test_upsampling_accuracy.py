"""What upsampling keeps of the base's caption accuracy: `glide sample` keeps the base's images beside the
upsampled ones (OUT/base/), and the demo summary compares the two on the same draws."""
import json
import random

import numpy as np
from PIL import Image

from conftest import REPO

SCENE = REPO / "checkpoints" / "demo" / "scene-classifier"


def samples_folder(tmp_path, recoloured: int):
    """A `glide sample -o` folder of 8 one-shape scenes: base images right, the last `recoloured`
    upsampled ones drawn on another background (as an upsampler that drifts)."""
    from pipeline.sample_render import PALETTE, render_scene
    from pipeline.sample_world import describe_scene, make_scene

    rng = random.Random(3)
    (tmp_path / "base").mkdir(parents=True)
    images = []
    for i in range(8):
        scene = make_scene(rng, max_shapes=1)
        render_scene(scene, 16).save(tmp_path / "base" / f"sample-{i:04d}.png")
        drawn = dict(scene)
        if i >= 8 - recoloured:
            used = {scene["background"]} | {s["colour"] for s in scene["shapes"]}
            drawn["background"] = next(c for c in PALETTE if c not in used)
        render_scene(drawn, 64).save(tmp_path / f"sample-{i:04d}.png")
        images.append({"file": f"sample-{i:04d}.png", "prompt": describe_scene(scene),
                       "base_file": f"base/sample-{i:04d}.png"})
    (tmp_path / "settings.json").write_text(json.dumps({"images": images}))
    return tmp_path


def test_scene_accuracy_compares_the_upsampled_images_with_the_base_images_they_came_from(tmp_path):
    from pipeline.caption_accuracy import scene_accuracy, score
    from pipeline.demo_summary import upsampling_lines

    acc = scene_accuracy(samples_folder(tmp_path, recoloured=4), SCENE)
    assert acc["images"] == 8
    assert acc["base"]["background"] == 1.0 and acc["base"]["all attributes"] >= 0.875
    assert acc["final"]["background"] == 0.5 and acc["final"]["kind"] >= 0.875
    kept = acc["final"]["all attributes"] / acc["base"]["all attributes"]
    line, = upsampling_lines(acc)
    assert line.startswith(f"upsampling kept {kept:.0%} of the base's caption accuracy on the same 8 draws")
    assert "background 100% -> 50%" in line
    # the colour heuristic reads the base images too (settings.json's base_file)
    assert score(tmp_path, "base_file")["background_right"] == 8
    assert score(tmp_path)["background_right"] == 4


def test_glide_sample_keeps_the_base_images_the_upsampler_started_from(glide_cli, tmp_path):
    from conftest import save_tiny_checkpoint

    base = save_tiny_checkpoint(tmp_path / "base")
    up = save_tiny_checkpoint(tmp_path / "up", kind="upsampler", image_size=64, noise_schedule="linear")
    out = tmp_path / "out"
    assert glide_cli("sample", "--model", base, "--upsampler", up, "--prompt", "a red cube", "--batch-size", 2,
                     "--steps", 2, "--upsampler-steps", 2, "--no-progress", "-o", out) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert [i["base_file"] for i in settings["images"]] == ["base/sample-0000.png", "base/sample-0001.png"]
    assert Image.open(out / "base" / "sample-0000.png").size == (32, 32) and (out / "base" / "grid.png").is_file()
    # without an upsampler there is nothing before upsampling to keep
    assert glide_cli("sample", "--model", base, "--prompt", "a red cube", "--steps", 2, "--no-progress",
                     "-o", tmp_path / "plain") == 0
    assert not (tmp_path / "plain" / "base").exists()
    assert "base_file" not in json.loads((tmp_path / "plain" / "settings.json").read_text())["images"][0]
    assert np.asarray(Image.open(out / "sample-0000.png")).shape == (64, 64, 3)
