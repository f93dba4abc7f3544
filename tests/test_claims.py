"""evaluation.claims: the paper's claims as tables from the stored files, with checks that say
whether each held; a claim that did not hold is reported as such, never hidden."""
import pytest

from evaluation.claims import clip_guidance_claim, fewer_steps_claim, filtering_claim, guidance_claim


def report(points):
    """metrics.json + settings.json of a guidance sweep: {scale: (colour, precision, recall)}."""
    metrics, settings = {"settings": {}}, {}
    for g, (colour, precision, recall) in points.items():
        name = f"guidance-{g:g}"
        settings[name] = {"guidance": g, "clip_guidance": None}
        metrics["settings"][name] = {"samples": 64, "fid": 100.0 / g, "precision": precision, "recall": recall,
                                     "inception_score": None, "clip_score": 0.2 + g / 100,
                                     "caption_accuracy": {"colour": colour, "kind": 0.9, "background": 1.0,
                                                          "all": colour * 0.9}}
    return metrics, settings


def test_guidance_claim_holds_when_colour_gains_and_precision_recall_trade():
    metrics, settings = report({1: (0.50, 0.80, 0.60), 3: (0.70, 0.90, 0.50), 2: (0.60, 0.85, 0.55)})
    settings["guidance-1-clip-2"] = {"guidance": 1, "clip_guidance": 2}  # a CLIP-guided setting is not a scale
    metrics["settings"]["guidance-1-clip-2"] = metrics["settings"]["guidance-1"]
    claim = guidance_claim(metrics, settings)
    assert [r["guidance"] for r in claim["rows"]] == [1, 2, 3]
    assert claim["rows"][2]["colour"] == 0.70 and claim["rows"][0]["clip_score"] == pytest.approx(0.21)
    assert claim["holds"] and [c["holds"] for c in claim["checks"]] == [True, True, True]
    assert "0.500 -> 0.700 (+0.200)" in claim["checks"][0]["detail"]


def test_the_colour_gain_is_measured_at_guidance_3_and_the_trade_across_the_whole_sweep():
    # the bar: guidance 3 beats guidance 1 by 0.1, whatever guidance 5 does
    claim = guidance_claim(*report({1: (0.50, 0.80, 0.60), 3: (0.65, 0.85, 0.55), 5: (0.52, 0.90, 0.50)}))
    assert claim["holds"] and claim["checks"][0]["check"].endswith("from guidance 1 to 3")
    claim = guidance_claim(*report({1: (0.50, 0.80, 0.60), 3: (0.55, 0.85, 0.55), 5: (0.80, 0.90, 0.50)}))
    assert not claim["holds"] and "0.500 -> 0.550" in claim["checks"][0]["detail"]
    claim = guidance_claim(*report({1: (0.50, 0.80, 0.60), 3: (0.70, 0.85, 0.55), 5: (0.80, 0.90, 0.65)}))
    assert [c["holds"] for c in claim["checks"]] == [True, True, False]   # recall from 1 to 5
    assert guidance_claim(*report({1: (0.5, 0.8, 0.6), 2: (0.62, 0.9, 0.5)}))["checks"][0]["check"].endswith("1 to 2")


@pytest.mark.parametrize("points, failing", [
    ({1: (0.50, 0.80, 0.60), 3: (0.55, 0.90, 0.50)}, 0),   # colour gains only 0.05
    ({1: (0.50, 0.90, 0.60), 3: (0.70, 0.80, 0.50)}, 1),   # precision falls
    ({1: (0.50, 0.80, 0.50), 3: (0.70, 0.90, 0.60)}, 2),   # recall rises
])
def test_guidance_claim_reports_which_check_failed(points, failing):
    claim = guidance_claim(*report(points))
    assert not claim["holds"]
    assert [c["holds"] for c in claim["checks"]] == [i != failing for i in range(3)]


def test_guidance_claim_needs_two_scales_and_says_when_accuracy_is_missing():
    with pytest.raises(ValueError, match="two classifier-free"):
        guidance_claim(*report({1: (0.5, 0.8, 0.6)}))
    metrics, settings = report({1: (0.5, 0.8, 0.6), 3: (0.7, 0.9, 0.5)})
    for m in metrics["settings"].values():
        m["caption_accuracy"] = None
    claim = guidance_claim(metrics, settings)
    assert not claim["holds"] and "no caption accuracy" in claim["checks"][0]["detail"]


def draws(rates, baseline=0.0):
    return {"categories": {c: {"rate": r, "samples": 96, "prompts": {}} for c, r in rates.items()},
            "baseline": {c: baseline for c in rates}, "detector": {"world": "w"}}


def test_filtering_claim_holds_only_when_every_category_is_near_zero_filtered_and_common_unfiltered():
    fit = {"people": {"fnr_upper_95": 0.008, "held_out_positives": 367, "removed_fraction": 0.6}}
    claim = filtering_claim(draws({"people": 0.0, "violence": 0.0, "hate": 0.0}),
                            draws({"people": 0.5, "violence": 0.4, "hate": 0.6}), fit)
    assert claim["holds"] and len(claim["checks"]) == 6
    assert claim["rows"][0] == {"category": "people", "filtered_rate": 0.0, "unfiltered_rate": 0.5, "samples": 96,
                                "filtered_baseline": 0.0, "unfiltered_baseline": 0.0, "fnr_upper_95": 0.008,
                                "held_out_positives": 367, "removed_fraction": 0.6}
    weak = filtering_claim(draws({"people": 0.02, "violence": 0.0, "hate": 0.0}),
                           draws({"people": 0.5, "violence": 0.2, "hate": 0.6}))
    assert not weak["holds"]
    assert [c["check"] for c in weak["checks"] if not c["holds"]] == ["people: filtered model under 1%",
                                                                      "violence: unfiltered model over 30%"]
    with pytest.raises(ValueError, match="both models"):
        filtering_claim(draws({}), draws({"people": 0.5}))


def sampler_run(stage, steps, sampler, all_attributes, fid, seconds=None):
    return {"stage": stage, "steps": steps, "sampler": sampler, "seconds_per_sample": seconds,
            "metrics": {"samples": 32, "fid": fid, "precision": 0.9, "recall": 0.5,
                        "caption_accuracy": {"colour": all_attributes, "all": all_attributes}}}


def test_fewer_steps_claim_checks_each_sampler_against_its_stages_250_step_reference():
    runs = [sampler_run("base", "250", "ddpm", 0.80, 100.0, 2.0), sampler_run("base", "ddim50", "ddim", 0.78, 110.0, 0.4),
            sampler_run("base", "ddim25", "ddim", 0.70, 150.0, 0.2),
            sampler_run("upsampler", "250", "ddpm", 0.75, 90.0), sampler_run("upsampler", "fast27", "ddpm", 0.76, 95.0)]
    claim = fewer_steps_claim(runs)
    assert [(r["stage"], r["steps"], r["reference"]) for r in claim["rows"]] == [
        ("base", "250", True), ("base", "ddim50", False), ("base", "ddim25", False),
        ("upsampler", "250", True), ("upsampler", "fast27", False)]
    assert claim["rows"][1]["seconds_per_sample"] == 0.4 and claim["rows"][2]["fid"] == 150.0
    verdicts = {c["check"]: c["holds"] for c in claim["checks"]}
    assert len(verdicts) == 6 and not claim["holds"]
    # ddim50 loses 0.02 accuracy and 10% FID: little; ddim25 loses 0.10 and 50%: too much; the upsampler's
    # fast27 is checked against the upsampler's own 250 steps, not the base's
    assert [k for k, ok in verdicts.items() if not ok] == [
        "base: ddim25 (ddim) against 250: caption accuracy at most 0.05 lower", "base: ddim25 (ddim) against 250: FID at most 1.2x"]
    assert "0.800 -> 0.700 (-0.100)" in claim["checks"][2]["detail"] and "(x1.50)" in claim["checks"][3]["detail"]
    assert fewer_steps_claim(runs[:2])["holds"]
    with pytest.raises(ValueError, match="fewer-step sampler"):
        fewer_steps_claim(runs[:1])


def with_clip_guidance(points, guided):
    """A guidance report plus CLIP-guided settings: guided = {clip scale: (clip score, all-attribute accuracy)}."""
    metrics, settings = report(points)
    for c, (score, acc) in guided.items():
        name = f"guidance-1-clip-{c:g}"
        settings[name] = {"guidance": 1.0, "clip_guidance": c}
        metrics["settings"][name] = {"samples": 64, "fid": 120.0, "clip_score": score,
                                     "caption_accuracy": {"colour": acc, "all": acc}}
    return metrics, settings


def test_clip_guidance_claim_holds_when_clip_guidance_wins_on_clip_score_but_not_on_accuracy():
    # classifier-free: clip score 0.21 / 0.23 at scales 1 / 3, all-attribute accuracy 0.45 / 0.63
    points = {1: (0.50, 0.8, 0.6), 3: (0.70, 0.9, 0.5)}
    claim = clip_guidance_claim(*with_clip_guidance(points, {2: (0.26, 0.40), 5: (0.30, 0.50)}))
    assert claim["holds"] and claim["compared"] == ["guidance-3", "guidance-1-clip-5"]
    assert [r["setting"] for r in claim["rows"]] == ["guidance-1", "guidance-3", "guidance-1-clip-2", "guidance-1-clip-5"]
    assert "0.230 vs 0.300" in claim["checks"][0]["detail"] and "0.630 vs 0.500" in claim["checks"][1]["detail"]
    # CLIP guidance that really draws the captions better: the hypothesis is not borne out
    fair = clip_guidance_claim(*with_clip_guidance(points, {5: (0.30, 0.80)}))
    assert not fair["holds"] and [c["holds"] for c in fair["checks"]] == [True, False]
    # a CLIP score below classifier-free guidance's
    weak = clip_guidance_claim(*with_clip_guidance(points, {5: (0.22, 0.30)}))
    assert [c["holds"] for c in weak["checks"]] == [False, True]
    with pytest.raises(ValueError, match="CLIP-guided and classifier-free"):
        clip_guidance_claim(*report(points))
    metrics, settings = with_clip_guidance(points, {5: (0.30, 0.5)})
    for m in metrics["settings"].values():
        m["clip_score"] = None
    unscored = clip_guidance_claim(metrics, settings)
    assert not unscored["holds"] and "no CLIP score" in unscored["checks"][0]["detail"]
