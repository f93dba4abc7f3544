"""Improved precision and recall (Kynkaanniemi et al. 2019), k = 3, in memory bounded by a block size.

    result = precision_recall(real_features, fake_features, k=3, block_size=4096)
    result.precision, result.recall

Each set's manifold is the union of balls around its points, each ball reaching that point's k-th
nearest neighbour in the same set (the point itself not counted; guided-diffusion's evaluator takes the
(k+1)-th smallest distance with the point included, the same thing). Precision: the share of generated
points inside some real ball; recall: the share of real points inside some generated ball.

Distances come in block_size x block_size tiles of squared distances, |x|^2 + |y|^2 - 2 x.y, by one
float32 matmul each (as the reference evaluator computes them); only per-row running results are kept:
the k+1 smallest squared distances (radii), and "inside some ball yet" flags. Memory beyond the inputs
is a few tiles (O(block_size^2)) plus O(N k), however large N is. Work: the within-set distances are
symmetric, so each pair of tiles is computed once (half of N^2 per set), and the one real-by-generated
distance matrix serves both precision and recall: 2 N^2 distances for N real and N generated points,
where a direct implementation computes 4 N^2.

Why by hand: torch-fidelity's precision/recall (metric_prc) keeps a full row block by all columns
(block_size x N floats: 2 GB at 50,000 points and its default block) or the whole N x N matrix, and
computes every distance matrix separately; torchmetrics and clean-fid have none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK = 4096


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int
    real: int
    fake: int

    def to_json(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "k": self.k, "real": self.real, "fake": self.fake}


def _squared_distances(x, y, x_norm, y_norm):
    import torch

    d = torch.addmm(x_norm[:, None] + y_norm[None, :], x, y.T, beta=1.0, alpha=-2.0)
    return d.clamp_min_(0.0)


def _merge_smallest(best, block, k1: int):
    """best [R, k1] running smallest, block [R, C] new candidates -> smallest k1 of both, sorted."""
    import torch

    candidates = torch.topk(block, min(k1, block.shape[1]), dim=1, largest=False, sorted=False).values
    return torch.topk(torch.cat([best, candidates], dim=1), k1, dim=1, largest=False, sorted=True).values


def _kth_neighbour_radii(x, norms, k: int, block: int):
    """Squared distance of each row of x to its k-th nearest other row: [N] (self-distance 0 included
    as the smallest, so it is the (k+1)-th smallest)."""
    import torch

    n = x.shape[0]
    k1 = min(k + 1, n)
    best = torch.full((n, k1), float("inf"), dtype=x.dtype)
    for i in range(0, n, block):
        rows = slice(i, min(i + block, n))
        for j in range(i, n, block):
            cols = slice(j, min(j + block, n))
            d = _squared_distances(x[rows], x[cols], norms[rows], norms[cols])
            if i == j:
                d.fill_diagonal_(0.0)  # exactly 0 to itself, whatever the rounding of the formula
            best[rows] = _merge_smallest(best[rows], d, k1)
            if i != j:
                best[cols] = _merge_smallest(best[cols], d.T.contiguous(), k1)  # topk is slow on a view
    return best[:, k1 - 1]


def precision_recall(real, fake, k: int = 3, block_size: int = DEFAULT_BLOCK) -> PrecisionRecall:
    """Precision and recall of `fake` [M, D] against `real` [N, D] features (see the module doc)."""
    import torch

    real = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: features must be [N, D] of one width, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision_recall: needs more than k={k} points per set, got {real.shape[0]} real "
                         f"and {fake.shape[0]} generated")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    with torch.inference_mode():
        real_norm = (real * real).sum(dim=1)
        fake_norm = (fake * fake).sum(dim=1)
        real_radii = _kth_neighbour_radii(real, real_norm, k, block_size)
        fake_radii = _kth_neighbour_radii(fake, fake_norm, k, block_size)
        fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool)   # precision: in some real ball
        real_inside = torch.zeros(real.shape[0], dtype=torch.bool)   # recall: in some generated ball
        for i in range(0, real.shape[0], block_size):
            rows = slice(i, min(i + block_size, real.shape[0]))
            for j in range(0, fake.shape[0], block_size):
                cols = slice(j, min(j + block_size, fake.shape[0]))
                d = _squared_distances(real[rows], fake[cols], real_norm[rows], fake_norm[cols])
                fake_inside[cols] |= (d <= real_radii[rows, None]).any(dim=0)
                real_inside[rows] |= (d <= fake_radii[None, cols]).any(dim=1)
    return PrecisionRecall(precision=int(fake_inside.sum()) / fake.shape[0], recall=int(real_inside.sum()) / real.shape[0],
                           k=k, real=int(real.shape[0]), fake=int(fake.shape[0]))
