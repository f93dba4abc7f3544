"""The Frechet distance between two Gaussians, the heart of FID (Heusel et al. 2017).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

`frechet_distance(mu1, sigma1, mu2, sigma2) -> float` computes it in float64 without a general
matrix square root (scipy.linalg.sqrtm: a complex Schur decomposition, slow at d = 2048, and it can
return a complex result or fail on singular covariances, which is why the reference implementations
add an epsilon to the diagonal and drop imaginary parts).

tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2. S1 S2 is not symmetric,
but it is similar to a symmetric positive semi-definite matrix whose eigenvalues are cheap to get:
  - S1 = L L^T (Cholesky; S1 positive definite): S1 S2 = L (L^T S2 L) L^-1, so the eigenvalues are
    those of L^T S2 L: one symmetric eigenvalue problem without eigenvectors (numpy.linalg.eigvalsh),
    which is the answer when all of them are clearly above rounding noise;
  - otherwise (S1 or the product singular, e.g. fewer samples than dimensions): a zero eigenvalue
    computes as rounding noise ~eps, and its square root, ~sqrt(eps), would be an error far above
    float64's. So the square roots are taken on each covariance's numerical range only:
    S = V_r diag(w_r) V_r^T (symmetric eigendecomposition, eigenvalues below numpy's matrix-rank
    tolerance set to exactly 0), and tr((S1 S2)^(1/2)) = sum of the singular values of
    diag(w1)^(1/2) V1^T V2 diag(w2)^(1/2) (singular values are accurate to eps in absolute terms).
The first route covers FID on enough samples (N > D) and is the fast one; both are backward stable.
"""
from __future__ import annotations

import numpy as np


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) in float64 of features [N, D] (N >= 2; unbiased covariance, as
    every FID implementation computes it)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {x.shape}")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric positive semi-definite float64 matrices (see the module doc)."""
    try:
        lower = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:  # singular: fewer samples than dimensions
        return _trace_sqrt_product_singular(sigma1, sigma2)
    inner = lower.T @ sigma2 @ lower
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) * 0.5)  # symmetric up to rounding; make it exactly so
    if eigenvalues[0] < _rank_tolerance(eigenvalues):
        # numerically singular after all: its rounding-level eigenvalues would add sqrt(eps)-sized errors
        return _trace_sqrt_product_singular(sigma1, sigma2)
    return float(np.sqrt(eigenvalues).sum())


def _rank_tolerance(eigenvalues: np.ndarray) -> float:
    """Eigenvalues below this are rounding noise of a zero one (numpy.linalg.matrix_rank's bound)."""
    return eigenvalues.shape[0] * np.finfo(np.float64).eps * max(float(np.abs(eigenvalues).max()), 1e-300)


def _trace_sqrt_product_singular(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """The same for singular covariances, accurately: tr((S1 S2)^(1/2)) is the nuclear norm of
    S1^(1/2) S2^(1/2). Each square root is taken on its numerical range only (eigenvalues below the
    rank tolerance are exact zeros, so their rounding noise is not square-rooted into the result), and
    the nuclear norm is the sum of the singular values of the r1 x r2 core (W1^(1/2) V1^T V2 W2^(1/2))."""
    cores = []
    for sigma in (sigma1, sigma2):
        w, v = np.linalg.eigh(sigma)
        keep = w > _rank_tolerance(w)
        cores.append(v[:, keep] * np.sqrt(w[keep]))
    if cores[0].shape[1] == 0 or cores[1].shape[1] == 0:
        return 0.0
    return float(np.linalg.svd(cores[0].T @ cores[1], compute_uv=False).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    mu1, mu2: [D]; sigma1, sigma2: [D, D] covariances (symmetric positive semi-definite). This is
    FID when they are the Inception pool statistics of two image sets. Raises ValueError on shapes
    that do not match or values that are not finite. Never negative (rounding is clamped at 0)."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"frechet_distance: {name} holds values that are not finite")
    sigma1 = (sigma1 + sigma1.T) * 0.5
    sigma2 = (sigma2 + sigma2.T) * 0.5
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(distance, 0.0))
