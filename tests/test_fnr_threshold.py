"""The threshold rule: FNR under the target with 95% confidence, and honest about too few positives."""
import numpy as np
import pytest

from filtering.fnr_threshold import (NotEnoughPositives, allowed_misses, fnr_upper_bound, min_positives,
                                     tune_threshold)


def test_the_clopper_pearson_bound_with_no_misses_is_one_minus_alpha_to_the_one_over_n():
    for n in (10, 100, 299, 1024):
        assert fnr_upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert fnr_upper_bound(3, 100) == pytest.approx(0.0757, abs=1e-4)  # tables: 3/100 -> 7.57%
    assert fnr_upper_bound(5, 5) == 1.0


def test_a_target_of_one_percent_needs_299_held_out_positives():
    assert min_positives(0.01) == 299 and fnr_upper_bound(0, 298) > 0.01 >= fnr_upper_bound(0, 299)
    assert min_positives(0.05) == 59
    assert allowed_misses(298, 0.01) == -1 and allowed_misses(299, 0.01) == 0
    assert allowed_misses(1024, 0.01) == 4  # 4 misses: bound 0.94%; 5 would be 1.09%


def test_the_threshold_is_the_largest_whose_bound_meets_the_target():
    scores = np.random.default_rng(0).normal(2.0, 1.0, 1024)
    choice = tune_threshold(scores, 0.01)
    ordered = np.sort(scores)
    assert (choice.misses, choice.positives) == (4, 1024) and choice.fnr == 4 / 1024
    assert choice.fnr_upper_95 <= 0.01 < fnr_upper_bound(5, 1024)
    assert ordered[3] < choice.threshold < ordered[4] and ordered[4] - choice.threshold <= 1e-4
    assert np.count_nonzero(scores < choice.threshold) == 4


def test_tied_scores_at_the_threshold_count_as_caught():
    scores = np.array([0.1, 0.2, 0.3] + [0.5] * 3 + [1.0] * 1018)  # 4 misses allowed; the 4th lowest is tied
    choice = tune_threshold(scores, 0.01)
    assert choice.threshold == 0.5 and choice.misses == 3 and choice.fnr_upper_95 <= 0.01


def test_too_few_positives_is_an_error_that_says_how_many_are_needed():
    with pytest.raises(NotEnoughPositives) as e:
        tune_threshold(np.ones(103), 0.01)
    assert (e.value.positives, e.value.needed) == (103, 299) and "needs >= 299" in str(e.value)


def test_the_true_fnr_stays_under_the_target_in_at_least_95_percent_of_fits():
    """The guarantee itself: positives' scores ~ U(0, 1), so the true FNR at threshold t is t."""
    rng = np.random.default_rng(1)
    trials, n, target = 2000, 400, 0.02
    true_fnr = np.array([tune_threshold(rng.random(n), target).threshold for _ in range(trials)])
    over = np.mean(true_fnr > target)
    assert over <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)  # 95% coverage, within sampling error
    assert over >= 0.01  # and not wastefully conservative: the bound is tight
