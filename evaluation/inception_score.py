"""The Inception Score (Salimans et al. 2016) from Inception-v3 logits.

    mean, std = inception_score(logits, splits=10)

IS = exp(E_x KL(p(y|x) || p(y))), computed per split of the samples (p(y) the split's mean of p(y|x))
and reported as the mean and standard deviation over the splits, as the original code does: the
softmax of the 1008 logits without the bias (evaluation.features, "logits_unbiased"), 10 splits in
sample order (no shuffling), float64. The computation itself is torch-fidelity's
(metric_isc.isc_features_to_metric) with shuffling off.
"""
from __future__ import annotations

import numpy as np


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `splits` consecutive splits of logits [N, C]."""
    import torch
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] < splits or splits < 1:
        raise ValueError(f"inception_score: needs logits [N >= splits, C] and splits >= 1, got {logits.shape} "
                         f"and splits={splits}")
    out = isc_features_to_metric(torch.from_numpy(logits.astype(np.float64)), splits=splits, shuffle=False)
    return out["inception_score_mean"], out["inception_score_std"]
