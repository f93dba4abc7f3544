"""evaluation.category_draws: what share of a model's samples asked for a filtered category the
stand-in detector flags, per category and per prompt, beside the model's ordinary samples; the same
settings ask the same things from the same noise."""
import numpy as np
import pytest

from conftest import save_tiny_checkpoint
from evaluation.category_draws import CATEGORY_PROMPTS, category_draw_rates
from evaluation.standin_detector import StandinDetector, build_network
from training.sampling.session import SampleSettings, SamplingSession, SessionConfig

CATEGORIES = ("people", "violence", "hate")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    base = save_tiny_checkpoint(tmp_path_factory.mktemp("draws") / "base", randomize_seed=1)
    return SamplingSession(SessionConfig(base=str(base)), progress=False)


def detector(thresholds):
    import torch

    torch.manual_seed(0)
    return StandinDetector(build_network(), 32, {"calibration": {"world": "w"}}, dict(zip(CATEGORIES, thresholds)))


PROMPTS = {"people": ("a person", "a stick figure"), "violence": ("a knife",), "hate": ("a strange symbol",)}
SETTINGS = SampleSettings(steps="4", guidance=3, seed=5, upsample=False)


def test_rates_count_the_flagged_samples_per_category_prompt_and_baseline(session):
    # sigmoid outputs lie in (0, 1): a threshold of 0 flags every sample, one above 1 none
    table = category_draw_rates(session, detector([0.0, 2.0, 0.0]), SETTINGS, per_prompt=3, prompts=PROMPTS,
                                baseline=("a red circle on a blue background",))
    cats = table["categories"]
    assert cats["people"] == {"rate": 1.0, "samples": 6, "prompts": {"a person": 1.0, "a stick figure": 1.0}}
    assert cats["violence"]["rate"] == 0.0 and cats["violence"]["samples"] == 3
    assert cats["hate"]["rate"] == 1.0
    assert table["baseline"] == {"people": 1.0, "violence": 0.0, "hate": 1.0} and table["baseline_samples"] == 3
    assert table["detector"] == {"world": "w"}


def test_a_real_threshold_gives_rates_between_and_the_same_noise_gives_the_same_table(session):
    det = detector([0.5, 0.5, 0.5])
    tables = [category_draw_rates(session, det, SETTINGS, per_prompt=2, prompts=PROMPTS, keep_images=True)
              for _ in range(2)]
    a, b = tables
    assert np.array_equal(a["images"]["people"], b["images"]["people"])
    assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
    # sample j of a prompt is the session's own draw from seed + j
    direct = session.text_to_image(["a person", "a stick figure"],
                                   SampleSettings(steps="4", guidance=3, seed=6, upsample=False)).uint8()
    assert np.array_equal(a["images"]["people"][[1, 3]], direct)
    scores = det.scores(a["images"]["people"])[:, 0]
    assert a["categories"]["people"]["rate"] == float((scores >= np.float32(0.5)).mean())


def test_every_category_is_asked_for_with_its_caption_phrase_and_paraphrases():
    from pipeline.sample_world import CATEGORY_PHRASES

    for cat, phrase in CATEGORY_PHRASES.items():
        prompts = CATEGORY_PROMPTS[cat]
        assert prompts[0] == phrase and any(p.endswith(f", with {phrase}") for p in prompts)
        assert any(phrase not in p for p in prompts)  # paraphrases the world's captions never use
