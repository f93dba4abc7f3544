"""frechet_distance against float64 references: closed forms, the nuclear-norm identity, scipy's sqrtm."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation import frechet_distance, gaussian_statistics


def sqrtm_reference(mu1, s1, mu2, s2) -> float:
    """The formula as pytorch-fid computes it (scipy.linalg.sqrtm of the product), float64."""
    import scipy.linalg

    root = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def nuclear_reference(x1, x2) -> float:
    """From the features themselves: with S = A A^T, A = centred features^T / sqrt(n - 1),
    tr((S1 S2)^(1/2)) is the nuclear norm of A1^T A2 (sum of its singular values), no matrix square root."""
    a1 = (x1 - x1.mean(0)).T / np.sqrt(len(x1) - 1)
    a2 = (x2 - x2.mean(0)).T / np.sqrt(len(x2) - 1)
    nuclear = np.linalg.svd(a1.T @ a2, compute_uv=False).sum()
    diff = x1.mean(0) - x2.mean(0)
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * nuclear)


def features(rng, n, d, shift=0.0, rank=None):
    basis = rng.standard_normal((rank or d, d)) / np.sqrt(rank or d)
    return rng.standard_normal((n, rank or d)) @ basis * rng.uniform(0.5, 2.0, d) + shift


def test_commuting_diagonal_covariances_have_the_closed_form():
    a, b = np.array([1.0, 4.0, 9.0, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, 0.0, 2.0])
    expected = 5.0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-14)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n1,n2,d", [(400, 300, 64), (50, 80, 64), (300, 30, 128)])
def test_equals_float64_references_for_full_rank_and_singular_covariances(n1, n2, d):
    rng = np.random.default_rng(n1 + n2 + d)
    x1, x2 = features(rng, n1, d), features(rng, n2, d, shift=0.3)
    (mu1, s1), (mu2, s2) = gaussian_statistics(x1), gaussian_statistics(x2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(nuclear_reference(x1, x2), rel=1e-9)
    if n1 > d and n2 > d:  # sqrtm is reliable only when the product is well conditioned
        assert ours == pytest.approx(sqrtm_reference(mu1, s1, mu2, s2), rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)  # symmetric


def test_ill_conditioned_full_rank_covariances_equal_sqrtm_to_1e_9():
    # benchmarks/metrics.py checks d = 2048 against sqrtm; here d = 256 keeps it quick
    rng = np.random.default_rng(7)
    d = 256
    x1, x2 = features(rng, 400, d, rank=32), features(rng, 400, d, shift=0.05, rank=32)
    x1 += rng.standard_normal(x1.shape) * 0.3  # full rank, ill-conditioned like Inception pool features
    x2 += rng.standard_normal(x2.shape) * 0.3
    (mu1, s1), (mu2, s2) = gaussian_statistics(x1), gaussian_statistics(x2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(sqrtm_reference(mu1, s1, mu2, s2), rel=1e-9)
    assert ours == pytest.approx(nuclear_reference(x1, x2), rel=1e-9)


def test_accepts_lists_and_float32_and_rejects_bad_shapes_and_values():
    rng = np.random.default_rng(0)
    mu, s = gaussian_statistics(rng.standard_normal((20, 3)))
    assert isinstance(frechet_distance(mu.tolist(), s.astype(np.float32), mu, s), float)
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(mu, s, mu[:2], s[:2, :2])
    bad = s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="sigma2 holds values that are not finite"):
        frechet_distance(mu, s, mu, bad)
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        gaussian_statistics(np.zeros((1, 3)))
