"""`glide evaluate --clip-guidance 1 --clip NOISED_CLIP` end to end on the shipped demo base: the
CLIP-guided setting is sampled as Ray work next to the classifier-free one, cached (a rerun samples
nothing; adding --clip to a report samples only the CLIP-guided setting), named in settings.json and
samples/index.parquet, and shown in the report. No noised CLIP is shipped (checkpoints/demo/clip is the
clean one), so the test saves a tiny one (the tiny-clip model config at the base's 16 px, seed-0
weights): what matters here is that the whole path runs and the CLIP's gradient reaches the pictures."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, run_glide, save_tiny_checkpoint

BASE = REPO / "checkpoints" / "demo" / "base"
SCENE = REPO / "checkpoints" / "demo" / "scene-classifier"
PROMPTS = ["a red circle on a blue background", "a yellow square on a green background",
           "a white star on a black background", "a blue triangle on a pink background"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-guidance")
    references = root / "reference"
    references.mkdir()
    rng = np.random.default_rng(5)
    for k in range(12):   # FID needs some reference images; what they show does not matter here
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(references / f"{k:02d}.png")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    base_size = json.loads((BASE / "config.json").read_text())["model"]["image_size"]
    clip = save_tiny_checkpoint(root / "noised-clip", config="tiny-clip", image_size=base_size)
    report = root / "report"
    plain = ["evaluate", "--model", BASE, "--prompts", root / "prompts.txt", "--reference", references,
             "--features", f"scene:{SCENE}", "--guidance", "1", "--samples-per-setting", 4, "--batch-size", 4,
             "--steps", 6, "--workers", 1, "-o", report]
    first = run_glide(*plain, timeout=600)
    assert first.returncode == 0, first.stderr
    plain_files = {p: p.stat().st_mtime_ns for p in (report / "samples").rglob("*.png")}
    argv = plain + ["--clip-guidance", "1", "--clip", clip]
    second = run_glide(*argv, timeout=600)
    assert second.returncode == 0, second.stderr
    return {"report": report, "clip": clip, "argv": argv, "first": first, "second": second,
            "plain_files": plain_files}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_clip_guided_setting_is_sampled_stored_and_reported(env):
    report = env["report"]
    assert "0 cached, 4 to sample" in env["first"].stderr
    # adding --clip samples only the CLIP-guided setting: guidance 1's pixels do not depend on the CLIP
    assert "4 cached, 4 to sample" in env["second"].stderr
    assert {p: p.stat().st_mtime_ns for p in env["plain_files"]} == env["plain_files"]
    settings = json.loads((report / "settings.json").read_text())
    assert settings["guidance-1-clip-1"] == {"guidance": 1.0, "clip_guidance": 1.0, "model": str(BASE),
                                             "upsampler": None, "clip": str(env["clip"])}
    assert settings["guidance-1"]["clip_guidance"] is None
    rows = pq.read_table(report / "samples" / "index.parquet").to_pylist()
    guided = {(r["prompt_index"], r["seed"]): r for r in rows if r["setting"] == "guidance-1-clip-1"}
    plain = {(r["prompt_index"], r["seed"]): r for r in rows if r["setting"] == "guidance-1"}
    assert len(guided) == len(plain) == 4 and guided.keys() == plain.keys()
    # same prompt and noise: only the CLIP's gradient can make the pictures differ
    changed = [np.abs(np.asarray(Image.open(report / guided[k]["path"]), np.int16)
                      - np.asarray(Image.open(report / plain[k]["path"]), np.int16)).mean() for k in guided]
    assert min(changed) > 0.5, changed
    metrics = json.loads((report / "metrics.json").read_text())["settings"]["guidance-1-clip-1"]
    assert metrics["samples"] == 4 and metrics["fid"] > 0
    lineage = json.loads((report / "lineage.json").read_text())
    assert lineage["clip"]["path"] == str(env["clip"]) and lineage["clip"]["sha256"]
    page = (report / "index.html").read_text()
    assert "<td>guidance-1-clip-1</td>" in page and "grids/guidance-1-clip-1.png" in page
    assert (report / "grids" / "guidance-1-clip-1.png").is_file()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_rerun_samples_nothing_for_the_clip_guided_setting(env):
    files = {p: p.stat().st_mtime_ns for p in (env["report"] / "samples").rglob("*.png")}
    again = run_glide(*env["argv"], timeout=600)
    assert again.returncode == 0, again.stderr
    assert "8 cached, 0 to sample" in again.stderr and "sampled 0 images (8 cached)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (env["report"] / "samples").rglob("*.png")} == files
