"""The scene classifier: trained by `glide train-scene-classifier` on one sample world, it reads the scene
attributes of another world (another seed) back from real world images; it saves without pickle and
loads to the same predictions; captions and truth agree on what a scene shows."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from conftest import run_glide


def make_world(path, seed, count, max_shapes=1, size=64):
    """In-process: the worlds are inputs here (`glide sample-world` as a real process is in test_sample_world.py)."""
    from pipeline.cli import main

    assert main([str(a) for a in ("sample-world", "-o", path, "--count", count, "--seed", seed,
                                  "--image-size", size, "--max-shapes", max_shapes)]) == 0
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    train = make_world(root / "train", seed=11, count=1200)
    holdout = make_world(root / "holdout", seed=12, count=400)
    out = root / "clf"
    result = run_glide("train-scene-classifier", train, "--holdout", holdout, "--epochs", 10, "-o", out, "--json",
                       timeout=600)
    assert result.returncode == 0, result.stderr
    return {"root": root, "train": train, "holdout": holdout, "out": out,
            "report": json.loads(result.stdout.strip().splitlines()[-1]), "stdout": result.stdout}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_held_out_world_accuracy_is_above_95_percent_per_attribute(trained):
    holdout = trained["report"]["holdout"]
    assert set(holdout) == {"background", "colour", "kind"}  # a one-shape world: no count or placement head
    assert all(v > 0.95 for v in holdout.values()), holdout
    assert "held-out accuracy on 400 images" in trained["stdout"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_saved_without_pickle_and_reloads_to_the_same_predictions(trained):
    from evaluation.scene_classifier import SceneClassifier, read_world_images

    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "scene-classifier.json"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # plain tensors, nothing to unpickle
        assert any(k.startswith("heads.kind") for k in f.keys())
    meta = json.loads((out / "scene-classifier.json").read_text())
    assert meta["info"]["holdout"] == trained["report"]["holdout"]
    clf = SceneClassifier.load(out)
    world = read_world_images(trained["holdout"], limit=64)
    first = clf.predict(world.images)
    assert clf.predict(world.images) == first
    assert clf.accuracy(world.images, world.labels) == {
        name: float(np.mean([p[name] == w for p, w in zip(first, world.labels[name])])) for name in clf.classes}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_changed_weights_file_is_refused(trained, tmp_path):
    import shutil

    from evaluation.scene_classifier import SceneClassifier
    from shards import UserError

    copy = tmp_path / "clf"
    shutil.copytree(trained["out"], copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="not the weights"):
        SceneClassifier.load(copy)


def test_captions_state_what_the_truth_records(tmp_path):
    """Every caption of a world with one to three shapes parses to the attributes of its scene."""
    from evaluation.scene_attributes import attributes_of_caption, attributes_of_scene

    world = make_world(tmp_path / "w", seed=5, count=300, max_shapes=3, size=32)
    rows = pq.read_table(world / "truth.parquet", columns=["caption", "scene", "n_shapes"]).to_pylist()
    assert {r["n_shapes"] for r in rows} == {1, 2, 3}
    for r in rows:
        assert attributes_of_caption(r["caption"]) == attributes_of_scene(json.loads(r["scene"])), r["caption"]
    assert attributes_of_caption("a photo of a cat") is None
    # the same picture told two ways has the same canonical attributes
    assert attributes_of_caption("a small red circle above a large blue square on a green background") == \
        attributes_of_caption("a large blue square below a small red circle on a green background")


def test_training_on_a_folder_without_a_world_is_bad_input(tmp_path):
    result = run_glide("train-scene-classifier", tmp_path, "-o", tmp_path / "out", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not a sample world" in result.stderr
