"""The stand-in detector: trained by `glide train-standin-detector` on one sample world's truth and
calibrated on another (another seed), it flags no more of the calibration world's clean images than
asked and finds the stand-ins in a third world's images; it saves without pickle and reloads to the
same scores and thresholds; a changed weights file and bad input are one-line errors."""
import json

import numpy as np
import pytest
from safetensors import safe_open

from conftest import run_glide
from test_scene_classifier import make_world

CATEGORIES = ("people", "violence", "hate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    train = make_world(root / "train", seed=21, count=1500)
    holdout = make_world(root / "holdout", seed=22, count=600)
    test = make_world(root / "test", seed=23, count=600)
    out = root / "det"
    result = run_glide("train-standin-detector", train, "--holdout", holdout, "--steps", 600, "--input-size", 48,
                       "--blur-size", 0,
                       "--max-false-positive", 0.02, "-o", out, "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    return {"train": train, "holdout": holdout, "test": test, "out": out, "stdout": result.stdout,
            "report": json.loads(result.stdout.strip().splitlines()[-1])}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_calibrated_on_one_world_it_finds_the_standins_of_another(trained):
    from evaluation.standin_detector import StandinDetector, read_world_standins

    calibration = trained["report"]["calibration"]
    assert set(calibration) == set(CATEGORIES)
    for c in calibration.values():  # the calibration world: exactly what was asked, at most 2% of clean images
        assert c["false_positive_rate"] <= 0.02 and c["negatives"] > 300 and c["positives"] > 30
    detector = StandinDetector.load(trained["out"])
    world = read_world_standins(trained["test"], detector.input_size)
    flagged = detector.detect(world.images)
    rates = {name: (flagged[world.present[:, k], k].mean(), flagged[~world.present[:, k], k].mean())
             for k, name in enumerate(CATEGORIES)}
    print(rates)
    for name, (with_it, without) in rates.items():
        assert without < 0.06 and with_it > 0.4 and with_it > 5 * without, name


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_saved_without_pickle_and_reloads_to_the_same_scores_and_thresholds(trained, tmp_path):
    import shutil

    from evaluation.standin_detector import StandinDetector, read_world_standins
    from shards import UserError

    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "standin-detector.json"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 10
    a, b = StandinDetector.load(out), StandinDetector.load(out)
    images = read_world_standins(trained["test"], 48, limit=40).images
    assert np.array_equal(a.scores(images), b.scores(images))
    assert a.thresholds == {k: v["threshold"] for k, v in trained["report"]["calibration"].items()}
    copy = tmp_path / "det"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="not the weights"):
        StandinDetector.load(copy)
    with pytest.raises(UserError, match="not a glide-standin-detector"):
        StandinDetector.load(tmp_path)


def test_threshold_flags_at_most_the_allowed_share_of_clean_scores():
    from evaluation.standin_detector import threshold_for_false_positives

    scores = np.random.default_rng(0).random(900).astype(np.float32)
    assert (scores >= np.float32(threshold_for_false_positives(scores, 0.01))).sum() == 9
    tied = np.array([0.5] * 20 + [0.1] * 80, np.float32)  # ties at the cut are not flagged: never over the share
    assert (tied >= np.float32(threshold_for_false_positives(tied, 0.1))).sum() == 0
    assert (tied >= np.float32(threshold_for_false_positives(tied, 0.25))).sum() == 20


def test_bad_input_is_one_line_with_exit_code_2(tmp_path):
    world = make_world(tmp_path / "w", seed=3, count=30, size=32)
    for argv, message in [((tmp_path, "--holdout", world), "not a sample world"),
                          ((world, "--holdout", tmp_path), "not a sample world"),
                          ((world, "--holdout", world, "--max-false-positive", 1.5), "--max-false-positive"),
                          ((world, "--holdout", world, "--steps", 0), "steps")]:
        result = run_glide("train-standin-detector", *argv, "-o", tmp_path / "out", timeout=120)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_sample_like_training_and_calibration_hold_both_false_positive_rates(tmp_path):
    """With --blur-size the detector also sees noisy, blurred images (what a small model's upsampled
    samples look like) and its thresholds flag at most the allowed share of clean images either way."""
    from evaluation.standin_detector import read_world_standins, sample_like, train_standin_detector

    world = make_world(tmp_path / "w", seed=5, count=160, size=32)
    crisp = read_world_standins(world, 32).images
    noisy = sample_like(crisp, 8, 32)
    assert np.array_equal(noisy, sample_like(crisp, 8, 32))  # seeded: a calibration is repeatable
    assert np.abs(noisy.astype(int) - crisp.astype(int)).mean() > 5
    detector = train_standin_detector(world, steps=20, input_size=32, blur_size=8)
    assert detector.info["blur_size"] == 8 and detector.info["sample_noise"]
    for c in detector.calibrate(world, 0.1).values():
        assert c["false_positive_rate"] <= 0.1 and c["false_positive_rate_sample_like"] <= 0.1
