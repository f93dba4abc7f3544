"""`glide evaluate` end to end on the shipped demo checkpoints with tiny N: samples as Ray work, a rerun
samples nothing, a new guidance scale samples only itself, the report folder keeps the contract
`glide pairs make` reads, `glide report` rebuilds the page from what is stored, the memorisation check
finds a sample planted in the training set, and bad input is a one-line error with exit code 2."""
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, run_glide

BASE = REPO / "checkpoints" / "demo" / "base"
UPSAMPLER = REPO / "checkpoints" / "demo" / "upsampler"
SCENE = REPO / "checkpoints" / "demo" / "scene-classifier"
PROMPTS = ["a red circle on a blue background", "a yellow square on a green background",
           "a white star on a black background",
           "a blue triangle on a pink background, with <b>bold</b> & <script>alert(1)</script>"]
FAST = ["--steps", "8", "--upsampler-steps", "5", "--samples-per-setting", "4", "--batch-size", "4"]


def evaluate(env, *extra, timeout=900):
    return run_glide("evaluate", "--model", BASE, "--upsampler", UPSAMPLER, "--prompts", env["prompts"],
                     "--reference", env["world"] / "images", "--features", f"scene:{SCENE}",
                     "--scene-classifier", SCENE, "-o", env["report"], *FAST, *extra, timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    world = root / "world"
    from pipeline.cli import main  # the reference world is an input here: made in-process

    assert main([str(a) for a in ("sample-world", "-o", world, "--count", 40, "--seed", 21, "--image-size", 64,
                                  "--max-shapes", 1)]) == 0
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    env = {"root": root, "world": world, "prompts": root / "prompts.txt", "report": root / "report"}
    first = evaluate(env, "--guidance", "1")
    assert first.returncode == 0, first.stderr
    env["first"] = first
    env["first_files"] = {p: p.stat().st_mtime_ns for p in (env["report"] / "samples").rglob("*.png")}
    second = evaluate(env, "--guidance", "1,3")
    assert second.returncode == 0, second.stderr
    env["second"] = second
    return env


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_a_new_guidance_scale_samples_only_itself_and_a_rerun_samples_nothing(env):
    assert "0 cached, 4 to sample" in env["first"].stderr
    assert "sampling (" in env["first"].stderr             # the progress line of the Ray actors
    assert "4 cached, 4 to sample" in env["second"].stderr
    for path, mtime in env["first_files"].items():         # guidance 1's files were not written again
        assert path.stat().st_mtime_ns == mtime
    third = evaluate(env, "--guidance", "1,3")
    assert third.returncode == 0, third.stderr
    assert "8 cached, 0 to sample" in third.stderr and "sampling (" not in third.stderr
    assert "sampled 0 images (8 cached)" in third.stdout


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_the_report_folder_keeps_the_contract_pairs_make_reads(env):
    report = env["report"]
    index = pq.read_table(report / "samples" / "index.parquet")
    assert index.schema.names == ["setting", "prompt_index", "prompt", "seed", "path"]
    assert [index.schema.field(n).type for n in index.schema.names] == \
        [pa.string(), pa.int32(), pa.string(), pa.int64(), pa.string()]
    rows = index.to_pylist()
    assert len(rows) == 8 and {r["setting"] for r in rows} == {"guidance-1", "guidance-3"}
    by_setting = {s: {(r["prompt_index"], r["seed"]): r for r in rows if r["setting"] == s}
                  for s in ("guidance-1", "guidance-3")}
    assert by_setting["guidance-1"].keys() == by_setting["guidance-3"].keys()
    for key, r in by_setting["guidance-1"].items():
        assert by_setting["guidance-3"][key]["prompt"] == r["prompt"] == PROMPTS[r["prompt_index"]]
    for r in rows:
        image = Image.open(report / r["path"])
        assert image.size == (64, 64) and not os.path.isabs(r["path"])
    settings = json.loads((report / "settings.json").read_text())
    assert settings == {name: {"guidance": g, "clip_guidance": None, "model": str(BASE), "upsampler": str(UPSAMPLER)}
                        for name, g in (("guidance-1", 1.0), ("guidance-3", 3.0))}
    # guidance changes the pictures drawn from the same noise
    a = np.asarray(Image.open(report / by_setting["guidance-1"][(0, 0)]["path"]), dtype=np.int16)
    b = np.asarray(Image.open(report / by_setting["guidance-3"][(0, 0)]["path"]), dtype=np.int16)
    assert np.abs(a - b).mean() > 1


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_metrics_and_lineage_are_stored_and_glide_report_rebuilds_the_page(env):
    report = env["report"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["features"]["network"] == "scene-classifier"
    for name in ("guidance-1", "guidance-3"):
        m = metrics["settings"][name]
        assert m["fid"] > 0 and m["samples"] == 4 and m["inception_score"] is None
        acc = m["caption_accuracy"]
        assert set(acc) >= {"background", "colour", "kind", "all", "predictions"} and len(acc["predictions"]) == 4
    lineage = json.loads((report / "lineage.json").read_text())
    assert lineage["model"]["sha256"] and lineage["upsampler"]["sha256"] and lineage["prompts"]["sample_world"]
    assert lineage["reference"]["count"] == 40
    page = (report / "index.html").read_text()
    for name in ("index.html", "grids/guidance-1.png", "plots/caption-accuracy.png"):
        (report / name).unlink()
    rebuilt = run_glide("report", report, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (report / "grids" / "guidance-1.png").is_file() and (report / "plots" / "caption-accuracy.png").is_file()
    assert (report / "index.html").read_text() == page


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_memorisation_check_finds_a_sample_planted_in_the_training_set(env, tmp_path):
    from filtering.clip_features import load_clip_features
    from test_memorisation import scene, tiny_clean_clip, write_embedded_dataset

    rows = pq.read_table(env["report"] / "samples" / "index.parquet").to_pylist()
    planted = rows[5]
    training = np.stack([scene(i, 64) for i in range(30)])
    training[17] = np.asarray(Image.open(env["report"] / planted["path"]).convert("RGB"))
    clip = load_clip_features(str(tiny_clean_clip(tmp_path / "clip")), "cpu")
    dataset = write_embedded_dataset(tmp_path / "emb", clip, training)
    result = evaluate(env, "--guidance", "1,3", "--train-embeddings", dataset)
    assert result.returncode == 0, result.stderr
    assert "0 to sample" in result.stderr
    memo = json.loads((env["report"] / "memorisation.json").read_text())
    assert memo["searched"] == 30
    closest = min(memo["samples"], key=lambda s: s["distance"])
    assert closest["path"] == planted["path"] and closest["train_uid"] == f"{17:032x}"
    assert (env["report"] / closest["train_image"]).is_file()
    assert "Memorisation check" in (env["report"] / "index.html").read_text()


@pytest.mark.parametrize("change, message", [
    (["--model", "no/such/checkpoint"], r"--model: .*no/such/checkpoint"),
    (["--guidance", "1,x"], r"--guidance: '1,x' is not a comma-separated list of numbers"),
    (["--guidance", "0"], r"--guidance: '0' is not a positive guidance scale"),
    (["--features", "resnet:foo"], r"--features: 'resnet:foo' is not KIND:PATH"),
    (["--prompts", "no-such-prompts.txt"], r"no-such-prompts.txt: cannot read prompts"),
    (["--samples-per-setting", "1"], r"--samples-per-setting: 1; the metrics need at least 2"),
])
def test_bad_input_is_one_line_naming_it_with_exit_code_2(tmp_path, change, message, glide_cli, capsys):
    (tmp_path / "ref").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "ref" / "a.png")
    (tmp_path / "p.txt").write_text(PROMPTS[0] + "\n")
    argv = {"--model": str(BASE), "--prompts": str(tmp_path / "p.txt"), "--reference": str(tmp_path / "ref"),
            "--features": f"scene:{SCENE}", "--guidance": "1,3", "--samples-per-setting": "4"}
    argv[change[0]] = change[1]
    argv = ["evaluate", *[x for kv in argv.items() for x in kv], "-o", tmp_path / "out"]
    if change[0] == "--prompts":  # one case as a real process: the exit code and stderr a user sees
        result = run_glide(*argv, timeout=120)
        code, err = result.returncode, result.stderr
    else:  # the rest in-process: each real process spent its time importing torch to print one line
        code, err = glide_cli(*argv), capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_glide_report_on_a_folder_that_is_no_report_is_bad_input(tmp_path):
    result = run_glide("report", tmp_path, timeout=120)
    assert result.returncode == 2 and "not a finished evaluation report" in result.stderr


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(2400)
def test_the_report_in_headless_chromium_shows_its_tables_and_every_image(env):
    from label_page_world import opened_in_chromium

    with opened_in_chromium(env["report"] / "index.html") as page:
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                               "i.naturalWidth])")
        metrics_rows = page.locator("#metrics tr").count()
        accuracy_rows = page.locator("#caption-accuracy tr").count()
        prompts = page.locator("#grid-prompts td").all_inner_texts()
        injected = page.locator("#grid-prompts b, script:has-text('alert(1)')").count()
    sources = {src for src, _, _ in images}
    assert {"grids/guidance-1.png", "grids/guidance-3.png", "plots/caption-accuracy.png",
            "plots/precision-vs-recall.png"} <= sources
    assert all(done and width > 0 for _, done, width in images), images
    assert metrics_rows == 3 and accuracy_rows == 3              # a header and one row per setting
    assert PROMPTS[3] in prompts and injected == 0                # the markup prompt is shown as text
