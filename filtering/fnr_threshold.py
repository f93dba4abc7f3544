"""Tune a filter's threshold on held-out positives so its false-negative rate is provably low.

A pair is removed when its score is >= the threshold; a held-out positive scoring below it is a
miss (a false negative). The rule, and why it is honest:

- Sort the n held-out positive scores s_(1) <= ... <= s_(n). A threshold t in (s_(k), s_(k+1)]
  misses exactly k of them; the largest such t is s_(k+1).
- For a positive drawn from the same distribution, the true FNR at t = s_(k+1) is F(s_(k+1)), the
  (k+1)-th order statistic of n uniforms: Beta(k+1, n-k). Its 95% quantile is exactly the one-sided
  95% Clopper-Pearson upper bound for k misses in n. So choosing t from the held-out scores
  themselves costs no optimism, provided k is fixed by n alone (not by looking at the scores).
- We take the largest k whose bound is <= the target: the FNR is below the target with 95%
  confidence, not merely on average. With no misses the bound is 1 - 0.05^(1/n), so a target
  of 0.01 needs n >= 299 held-out positives; fewer is an error that says how many more.
- The threshold sits a hair below s_(k+1) (at most half-way to s_(k)), so float32 scoring on
  a GPU cannot flip that positive to a miss; a lower threshold only lowers the FNR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
# Margin below s_(k+1): far above float32 kernel error (~1e-6), far below any useful score gap.
THRESHOLD_MARGIN = 1e-4


def fnr_upper_bound(misses: int, positives: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on the FNR after `misses` of `positives`."""
    from scipy.stats import beta

    if positives <= 0:
        return 1.0
    if misses >= positives:
        return 1.0
    return float(beta.ppf(confidence, misses + 1, positives - misses))


def min_positives(target: float, confidence: float = CONFIDENCE) -> int:
    """Fewest held-out positives that can show FNR <= target: with no misses, 1 - (1-c)^(1/n) <= target."""
    n = math.ceil(math.log(1 - confidence) / math.log(1 - target))
    while fnr_upper_bound(0, n, confidence) > target:  # guard the float rounding of the closed form
        n += 1
    return n


def allowed_misses(positives: int, target: float, confidence: float = CONFIDENCE) -> int:
    """Most misses k whose upper bound is still <= target (-1 when even k = 0 is not)."""
    k = -1
    while k + 1 < positives and fnr_upper_bound(k + 1, positives, confidence) <= target:
        k += 1
    return k


class NotEnoughPositives(ValueError):
    """Too few held-out positives to show the target; `needed` is the fewest that would."""

    def __init__(self, positives: int, needed: int, target: float):
        self.positives, self.needed, self.target = positives, needed, target
        super().__init__(f"{positives} held-out positives cannot show an FNR <= {target:g} at "
                         f"{CONFIDENCE:.0%} confidence (that needs >= {needed} even with no misses)")


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    misses: int            # held-out positives scoring below the threshold
    positives: int         # held-out positives the choice rests on
    fnr: float             # misses / positives
    fnr_upper_95: float    # one-sided 95% Clopper-Pearson upper bound


def tune_threshold(positive_scores: np.ndarray, target: float) -> ThresholdChoice:
    """The largest threshold whose FNR upper bound on `positive_scores` is <= `target`."""
    scores = np.sort(np.asarray(positive_scores, dtype=np.float64))
    n = len(scores)
    k = allowed_misses(n, target)
    if k < 0:
        raise NotEnoughPositives(n, min_positives(target), target)
    catch = scores[k]  # s_(k+1): the lowest positive still caught
    below = scores[k - 1] if k > 0 else catch - 2 * THRESHOLD_MARGIN
    threshold = catch - min(THRESHOLD_MARGIN, (catch - below) / 2) if catch > below else catch
    misses = int(np.count_nonzero(scores < threshold))
    return ThresholdChoice(threshold=float(threshold), misses=misses, positives=n, fnr=misses / n,
                           fnr_upper_95=fnr_upper_bound(misses, n))
