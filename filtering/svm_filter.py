"""An RBF-SVM safety filter and the batched torch kernel that applies a set of them.

One filter (scikit-learn's SVC, binary, kernel rbf) scores an embedding x as

    score(x) = sum_i dual_coef[i] * exp(-gamma * ||x - sv_i||^2) + intercept

(exactly SVC.decision_function) and removes the pair when score >= threshold (tuned in
fnr_threshold.py). `FilterScorer` applies several filters at once: one matmul of the embeddings
against all their support vectors, chunked over rows so memory stays bounded, on the GPU when there
is one. float32 is fast but not exact, so every row whose score lies within the float32 error
(measured against float64 on each chunk, widened 16x) of a threshold is rescored in float64: the
decisions are those of decision_function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Each chunk's first rows are scored in both precisions; the largest float32 error seen, per unit
# of sum_i |coef_i| K_i (what the error scales with), widened ERROR_SAFETY times, is the band
# around each threshold inside which rows are rescored in float64.
CALIBRATION_ROWS = 256
ERROR_SAFETY = 16.0
# Kernel values below exp(-80) (float32) or exp(-700) (float64) are taken as that: a difference of
# under 1e-34 per support vector, far below either precision's rounding of the score.
EXP_FLOOR_FLOAT32, EXP_FLOOR_FLOAT64 = -80.0, -700.0


@dataclass
class SvmFilter:
    """One category's fitted filter. Shapes: support_vectors (n_sv, D), dual_coef (n_sv,)."""

    name: str
    support_vectors: np.ndarray   # float32: the embeddings are float16, so float32 holds them exactly
    dual_coef: np.ndarray         # float64, as scikit-learn fitted them
    gamma: float
    intercept: float
    threshold: float
    embedding_model: str
    info: dict = field(default_factory=dict)  # C, cross-validation AUC, FNR figures, label counts
    held_out_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # for the report's ROC
    held_out_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def dim(self) -> int:
        return int(self.support_vectors.shape[1])

    @classmethod
    def from_svc(cls, name: str, svc, *, threshold: float, embedding_model: str, **kwargs) -> "SvmFilter":
        """From a fitted binary SVC whose classes are (False, True): positive scores mean True."""
        if list(svc.classes_) != [False, True] or svc.kernel != "rbf":
            raise ValueError(f"{name}: need a binary rbf SVC fitted on boolean labels, got classes {svc.classes_}")
        return cls(name=name, support_vectors=np.asarray(svc.support_vectors_, dtype=np.float32),
                   dual_coef=np.asarray(svc.dual_coef_[0], dtype=np.float64),
                   gamma=float(svc._gamma),  # the value used, also when fitted with gamma="scale"
                   intercept=float(svc.intercept_[0]), threshold=float(threshold),
                   embedding_model=embedding_model, **kwargs)

    def scores_float64(self, x: np.ndarray) -> np.ndarray:
        """Reference decision values in numpy float64 (small inputs only: tests, re-checks)."""
        x = np.asarray(x, dtype=np.float64)
        sv = self.support_vectors.astype(np.float64)
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * x @ sv.T
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.dual_coef + self.intercept


class FilterScorer:
    """Scores embeddings against every filter of a set in one batched kernel computation.

        scorer = FilterScorer(filters, device="cuda")
        scores = scorer.scores(x)      # x: (n, D) float16/32 -> (n, F) float64
        removed = scores >= scorer.thresholds
    """

    def __init__(self, filters: Sequence[SvmFilter], device: str = "cpu", memory_mb: int = 256):
        import torch

        if not filters:
            raise ValueError("FilterScorer needs at least one filter")
        dims = {f.dim for f in filters}
        if len(dims) != 1:
            raise ValueError(f"filters disagree on the embedding size: {sorted(dims)}")
        self.filters, self.dim, self.device = list(filters), dims.pop(), torch.device(device)
        self.thresholds = np.array([f.threshold for f in filters], dtype=np.float64)
        sv = np.concatenate([f.support_vectors for f in filters]).astype(np.float64)
        coef = np.zeros((len(sv), len(filters)))  # block columns: filter j's coefficients in its rows
        gamma = np.concatenate([np.full(len(f.dual_coef), f.gamma) for f in filters])
        start = 0
        for j, f in enumerate(filters):
            coef[start:start + len(f.dual_coef), j] = f.dual_coef
            start += len(f.dual_coef)
        self._f64 = self._tensors(sv, coef, gamma, torch.float64)
        self._f32 = self._tensors(sv, coef, gamma, torch.float32)
        self.intercepts = torch.tensor([f.intercept for f in filters], dtype=torch.float64, device=self.device)
        self.rows_per_chunk = max(1, memory_mb * 2 ** 20 // (len(sv) * 4))  # the (rows, n_sv) float32 buffer
        # largest |float32 - float64 score| seen per unit of sum_i |coef_i| K_i (see _score_chunk)
        self._error_ratio = 0.0
        self.rechecked = 0  # rows rescored in float64 so far (a figure for benchmarks)

    def _tensors(self, sv, coef, gamma, dtype):
        import torch

        # [coef | |coef|]: the scores and the error scale sum |coef| K come out of one matmul
        t = {"sv": torch.tensor(sv, dtype=dtype, device=self.device),
             "coefs": torch.tensor(np.concatenate([coef, np.abs(coef)], 1), dtype=dtype, device=self.device),
             "neg_gamma": torch.tensor(-gamma, dtype=dtype, device=self.device)}
        t["sv_sq"] = (t["sv"] * t["sv"]).sum(1)
        return t

    def _kernel(self, x, t):
        """x: (rows, D) on the device -> (rows, 2F): scores without intercept, then sum |coef| K.

        One (rows, n_sv) buffer, updated in place: ||x||^2 + ||sv||^2 - 2 x.sv, then the kernel.
        """
        import torch

        k = (x @ t["sv"].T).mul_(-2.0).add_((x * x).sum(1, keepdim=True)).add_(t["sv_sq"])
        # exp of a large negative is slow (the underflow path) and its value below either precision
        floor = EXP_FLOOR_FLOAT32 if k.dtype == torch.float32 else EXP_FLOOR_FLOAT64
        k.clamp_min_(0).mul_(t["neg_gamma"]).clamp_min_(floor).exp_()
        return k @ t["coefs"]

    def scores(self, x) -> np.ndarray:
        """(n, D) embeddings -> (n, F) float64 decision values, exact where a decision depends on it."""
        import torch

        if not isinstance(x, torch.Tensor):  # Arrow's zero-copy arrays are read-only: torch wants its own
            x = torch.from_numpy(np.require(x, requirements="W"))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {tuple(x.shape)}; the filters expect (n, {self.dim})")
        out = np.empty((x.shape[0], len(self.filters)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.rows_per_chunk):
                chunk = x[start:start + self.rows_per_chunk].to(self.device, torch.float32)
                out[start:start + len(chunk)] = self._score_chunk(chunk)
        return out

    def _score_chunk(self, chunk) -> np.ndarray:
        import torch

        n_filters = len(self.filters)
        both = self._kernel(chunk, self._f32).double()
        scores = (both[:, :n_filters] + self.intercepts).cpu().numpy()
        abs_k = both[:, n_filters:].cpu().numpy()
        n_cal = min(CALIBRATION_ROWS, len(chunk))
        exact = self._exact(chunk[:n_cal])
        ratio = np.abs(scores[:n_cal] - exact) / (abs_k[:n_cal] + 1e-30)
        self._error_ratio = max(self._error_ratio, float(ratio.max(initial=0.0)))
        scores[:n_cal] = exact
        bound = ERROR_SAFETY * self._error_ratio * abs_k
        near = (np.abs(scores - self.thresholds) <= bound).any(axis=1)
        near[:n_cal] = False
        if near.any():  # rows a float32 error could flip: rescore them exactly
            idx = torch.from_numpy(np.flatnonzero(near)).to(self.device)
            scores[near] = self._exact(chunk.index_select(0, idx))
            self.rechecked += int(near.sum())
        return scores

    def _exact(self, rows) -> np.ndarray:
        s64 = self._kernel(rows.double(), self._f64)[:, :len(self.filters)]
        return (s64 + self.intercepts).cpu().numpy()

    def removes(self, scores: np.ndarray) -> np.ndarray:
        """(n, F) bool: which filters fire on which rows."""
        return scores >= self.thresholds

