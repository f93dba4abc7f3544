"""Elo scores from pairwise human judgements, as GLIDE Appendix A.1 computes them.

    wins = win_matrix(a_index, b_index, outcome, n_models)   # A[i, j]: times i beat j, a tie half each
    scores = fit_elo_scores(wins, names)                      # maximum likelihood, mean 0
    result = fit_elo(judgements, bootstrap=1000, seed=0)      # + bootstrap intervals, counts, win rates
    result.to_json()   # {"models": {NAME: {"elo", "ci_low", "ci_high", "comparisons"}}}

The model: P(i beats j) = 1 / (1 + 10^((s_j - s_i) / 400)), the standard Elo expectation. The scores
maximise the log-likelihood of the observed wins,

    log L(s) = sum_ij A_ij log P(i beats j),

which fixes them only up to a common shift; they are reported centred at mean 0. How this reads
against the objective as the paper prints it: docs/evaluation.md.

A finite maximum exists exactly when every split of the models into two groups has a win (or tie) of
each group over the other (Zermelo 1929; Ford 1957): the graph with an arrow i -> j whenever
A_ij > 0 is strongly connected. When it is not, `check_finite_maximum` raises a UserError naming the
models (one that won or lost every comparison, a group that beat everyone outside it, or groups never
compared with each other).

The fit is Newton's method on the negative log-likelihood (a convex function; its Hessian is the
Laplacian of the comparison graph weighted by p(1 - p)), from s = 0, with a step-halving line search:
a handful of 20 x 20 solves for 20 models. Bootstrap intervals resample the judgements with
replacement: judgements that agree in (model a, model b, outcome) are interchangeable, so a resample is
one multinomial draw over those cells, and all resamples are fitted together by batched Newton steps
started from the point estimate. A resample whose graph is not strongly connected (it can lose the
only win of a model) has no finite maximum; it is left out, and the result counts how many were.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from shards import UserError

ELO_SCALE = 400.0
BETA = math.log(10.0) / ELO_SCALE  # P = sigmoid(BETA * (s_i - s_j))
OUTCOMES = ("a", "b", "tie")       # outcome codes 0, 1, 2
A_WINS, B_WINS, TIE = 0, 1, 2
TOLERANCE = 1e-9                   # Elo points: Newton stops when a step moves no score further


def win_matrix(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """A [M, M] float64: A[i, j] = wins of i over j, each tie counting half a win for both sides.

    a, b: model indices per judgement; outcome: A_WINS, B_WINS or TIE per judgement."""
    counts = outcome_counts(a, b, outcome, n_models)
    return wins_from_counts(counts)


def outcome_counts(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """[M, M, 3] int64: how many judgements of model a (row) against model b (column) had each outcome."""
    index = (np.asarray(a, np.int64) * n_models + np.asarray(b, np.int64)) * 3 + np.asarray(outcome, np.int64)
    return np.bincount(index, minlength=n_models * n_models * 3).reshape(n_models, n_models, 3)


def wins_from_counts(counts: np.ndarray) -> np.ndarray:
    """[..., M, M, 3] outcome counts -> [..., M, M] wins (ties half a win each way)."""
    counts = np.asarray(counts, np.float64)
    a_won, b_won, tied = counts[..., 0], counts[..., 1], counts[..., 2]
    swap = tuple(range(counts.ndim - 3)) + (counts.ndim - 2, counts.ndim - 3)
    return a_won + b_won.transpose(swap) + 0.5 * (tied + tied.transpose(swap))


def log_likelihood(scores: np.ndarray, wins: np.ndarray) -> float:
    """sum_ij A_ij log P(i beats j) (natural log; <= 0)."""
    diff = BETA * (scores[:, None] - scores[None, :])
    return float(-(wins * np.logaddexp(0.0, -diff)).sum())


# ---------------------------------------------------------------------------------------------
# when a finite maximum exists
# ---------------------------------------------------------------------------------------------
def _reach(adjacent: np.ndarray) -> np.ndarray:
    """Transitive closure (with self) of boolean [..., M, M] adjacency, by repeated squaring."""
    m = adjacent.shape[-1]
    reach = adjacent | np.eye(m, dtype=bool)
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):
        reach = (reach.astype(np.float32) @ reach.astype(np.float32)) > 0
    return reach


def has_finite_maximum(wins: np.ndarray) -> np.ndarray:
    """Per [..., M, M] win matrix: is the win graph (i -> j when A_ij > 0) strongly connected?"""
    return _reach(wins > 0).all(axis=(-2, -1))


def check_finite_maximum(wins: np.ndarray, names: Sequence[str], where: str = "judgements") -> None:
    """UserError naming the models when the likelihood has no finite maximum (see the module doc)."""
    m = len(names)
    if m < 2:
        raise UserError(f"{where}: Elo needs comparisons between at least 2 models, found {m}")
    compared = (wins + wins.T) > 0
    groups = _components(_reach(compared))
    if len(groups) > 1:
        listed = "; ".join("{" + ", ".join(names[i] for i in g) + "}" for g in groups[:4])
        raise UserError(f"{where}: the comparison graph is disconnected: no judgement links the groups {listed} "
                        f"(their Elo scores have no common scale); compare across groups or fit each group alone")
    for i, name in enumerate(names):
        lost = wins[:, i].sum()
        won = wins[i, :].sum()
        if lost == 0:
            raise UserError(f"{where}: model {name!r} won every comparison it was in ({won:g}): its Elo has no "
                            f"finite maximum-likelihood value (it grows without bound); collect more judgements")
        if won == 0:
            raise UserError(f"{where}: model {name!r} lost every comparison it was in ({lost:g}): its Elo has no "
                            f"finite maximum-likelihood value (it falls without bound); collect more judgements")
    reach = _reach(wins > 0)
    if not reach.all():
        # a source component: its members reach each other, and no model outside it ever beat one of them
        for i in range(m):
            group = [j for j in range(m) if reach[j, i] and reach[i, j]]
            reached_by_others = any(reach[k, i] for k in range(m) if k not in group)
            if not reached_by_others:
                inside = ", ".join(names[j] for j in group)
                raise UserError(f"{where}: models {{{inside}}} won every comparison against the other models: "
                                f"the gap between the two groups has no finite maximum-likelihood value; "
                                f"collect more judgements across them")


def _components(reach: np.ndarray) -> list[list[int]]:
    seen, groups = set(), []
    for i in range(reach.shape[0]):
        if i not in seen:
            group = [j for j in range(reach.shape[0]) if reach[i, j]]
            seen.update(group)
            groups.append(group)
    return groups


# ---------------------------------------------------------------------------------------------
# the maximum-likelihood fit
# ---------------------------------------------------------------------------------------------
def _gradient_hessian(scores: np.ndarray, wins: np.ndarray):
    """Gradient and Hessian of the negative log-likelihood, batched over leading axes.

    scores [..., M], wins [..., M, M]. With n_ij = A_ij + A_ji and p_ij = P(i beats j):
    g_i = -BETA * sum_j (A_ij - n_ij p_ij); H = BETA^2 * Laplacian(n_ij p_ij (1 - p_ij))."""
    games = wins + np.swapaxes(wins, -1, -2)
    p = 1.0 / (1.0 + np.exp(-BETA * (scores[..., :, None] - scores[..., None, :])))
    gradient = -BETA * (wins - games * p).sum(axis=-1)
    weight = games * p * (1.0 - p)
    hessian = -BETA * BETA * weight
    diagonal = BETA * BETA * weight.sum(axis=-1)
    idx = np.arange(scores.shape[-1])
    hessian[..., idx, idx] = diagonal
    return gradient, hessian


def _newton_step(gradient: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """The mean-zero Newton step: H has the null space 1 (scores are shift-invariant), so solve
    (H + 11^T / M) step = -g; since sum(g) = 0 the step sums to 0 as well."""
    m = gradient.shape[-1]
    return np.linalg.solve(hessian + 1.0 / m, -gradient[..., None])[..., 0]


def _negative_log_likelihood(scores: np.ndarray, wins: np.ndarray) -> np.ndarray:
    diff = BETA * (scores[..., :, None] - scores[..., None, :])
    return (wins * np.logaddexp(0.0, -diff)).sum(axis=(-2, -1))


def fit_elo_scores(wins: np.ndarray, names: Sequence[str] | None = None, *, where: str = "judgements",
                   max_iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood Elo scores [M] (mean 0) of a win matrix A [M, M] (see the module doc).

    UserError (naming the models, `names` or their indices) when no finite maximum exists."""
    wins = np.asarray(wins, dtype=np.float64)
    m = wins.shape[0]
    if wins.shape != (m, m) or not np.all(np.isfinite(wins)) or (wins < 0).any():
        raise ValueError(f"wins must be a square matrix of non-negative counts, got shape {wins.shape}")
    check_finite_maximum(wins, list(names) if names is not None else [str(i) for i in range(m)], where)
    scores = np.zeros(m)
    loss = _negative_log_likelihood(scores, wins)
    for _ in range(max_iterations):
        gradient, hessian = _gradient_hessian(scores, wins)
        step = _newton_step(gradient, hessian)
        t = 1.0
        while True:  # step halving: the full Newton step is taken near the optimum
            candidate = scores + t * step
            new_loss = _negative_log_likelihood(candidate, wins)
            if new_loss <= loss + 1e-12 * abs(loss) or t < 1e-6:
                break
            t *= 0.5
        scores, loss = candidate - candidate.mean(), new_loss
        if np.abs(t * step).max() < TOLERANCE:
            break
    return scores


def fit_elo_scores_batched(wins: np.ndarray, start: np.ndarray, *, max_iterations: int = 50,
                           max_step: float = 400.0) -> tuple[np.ndarray, np.ndarray]:
    """Fit many win matrices [B, M, M] at once from `start` [M] (a nearby solution, e.g. the point
    estimate); each Newton step is clipped at `max_step` Elo points per model. Returns (scores [B, M],
    converged [B]): a matrix without a finite maximum (has_finite_maximum) or not converged is False."""
    wins = np.asarray(wins, dtype=np.float64)
    batch = wins.shape[0]
    ok = has_finite_maximum(wins)
    scores = np.broadcast_to(start, (batch, wins.shape[-1])).copy()
    active = ok.copy()
    for _ in range(max_iterations):
        if not active.any():
            break
        gradient, hessian = _gradient_hessian(scores[active], wins[active])
        step = _newton_step(gradient, hessian)
        biggest = np.abs(step).max(axis=-1, keepdims=True)
        step *= np.minimum(1.0, max_step / np.maximum(biggest, 1e-300))
        scores[active] += step
        scores[active] -= scores[active].mean(axis=-1, keepdims=True)
        done = np.abs(step).max(axis=-1) < TOLERANCE
        active[np.flatnonzero(active)[done]] = False
    converged = ok & ~active & np.all(np.isfinite(scores), axis=-1)
    return scores, converged


# ---------------------------------------------------------------------------------------------
# judgements in, Elo table out
# ---------------------------------------------------------------------------------------------
@dataclass
class EloResult:
    """Elo scores with bootstrap intervals and the counts behind them (index i = models[i])."""

    models: list[str]
    elo: np.ndarray                 # [M] maximum-likelihood scores, mean 0
    ci_low: np.ndarray              # [M] bootstrap percentile interval
    ci_high: np.ndarray
    comparisons: np.ndarray         # [M] judgements each model was in
    counts: np.ndarray              # [M, M, 3] outcomes of (a = row, b = column): a won, b won, tie
    confidence: float = 0.95
    bootstrap: int = 0              # resamples drawn
    bootstrap_failed: int = 0       # resamples without a finite maximum (left out of the intervals)
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def wins(self) -> np.ndarray:
        """A [M, M]: wins of row over column, ties half each."""
        return wins_from_counts(self.counts)

    @property
    def games(self) -> np.ndarray:
        """[M, M] judgements between row and column (either side)."""
        total = self.counts.sum(axis=-1)
        return total + total.T

    def win_rates(self) -> np.ndarray:
        """[M, M] share of the judgements between row and column won by row (ties half); NaN where
        the two were never compared."""
        games = self.games
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(games > 0, self.wins / np.maximum(games, 1), np.nan)

    def expected_win_rates(self) -> np.ndarray:
        """[M, M] P(row beats column) under the fitted scores."""
        return 1.0 / (1.0 + 10.0 ** ((self.elo[None, :] - self.elo[:, None]) / ELO_SCALE))

    def order(self) -> list[int]:
        """Model indices from the highest Elo down (ties by name)."""
        return sorted(range(len(self.models)), key=lambda i: (-self.elo[i], self.models[i]))

    def to_json(self) -> dict:
        """{"models": {NAME: {"elo", "ci_low", "ci_high", "comparisons"}}}, highest Elo first."""
        def number(x):  # an interval no resample could bound is null, not Infinity (not JSON)
            return round(float(x), 2) if np.isfinite(x) else None

        return {"models": {self.models[i]: {"elo": number(self.elo[i]), "ci_low": number(self.ci_low[i]),
                                            "ci_high": number(self.ci_high[i]),
                                            "comparisons": int(self.comparisons[i])}
                           for i in self.order()}}

    def format_table(self) -> str:
        """The Elo table, then the win-rate table (row's share of the judgements against column)."""
        order = self.order()
        level = f"{self.confidence:.0%}"
        wins, games = self.wins, self.games
        rows = [("model", "Elo", f"{level} interval", "comparisons", "wins", "ties", "losses")]
        for i in order:
            ties = float(self.counts[i, :, TIE].sum() + self.counts[:, i, TIE].sum())
            won = float(wins[i].sum()) - ties / 2
            rows.append((self.models[i], f"{self.elo[i]:+.1f}", f"[{self.ci_low[i]:+.1f}, {self.ci_high[i]:+.1f}]",
                         str(int(self.comparisons[i])), f"{won:g}", f"{ties:g}",
                         f"{float(games[i].sum()) - won - ties:g}"))
        lines = _columns(rows)
        note = f"{self.bootstrap} bootstrap resamples"
        if self.bootstrap_failed:
            note += f", {self.bootstrap_failed} left out (no finite maximum)"
        lines.append(f"(intervals: {note}; Elo centred at mean 0)")
        rates = self.win_rates()
        header = ("win rate (row vs column)",) + tuple(self.models[j] for j in order)
        table = [header]
        for i in order:
            table.append((self.models[i],) + tuple("-" if i == j or np.isnan(rates[i, j]) else
                                                   f"{rates[i, j]:.2f} ({int(games[i, j])})" for j in order))
        return "\n".join(lines + [""] + _columns(table))


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[k])) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) if k == 0 else str(c).rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def fit_elo(judgements, *, bootstrap: int = 1000, confidence: float = 0.95, seed: int | None = 0,
            where: str = "judgements") -> EloResult:
    """Fit Elo scores and bootstrap intervals to `judgements` (evaluation.judgements.Judgements:
    model names and per-judgement model indices and outcomes). UserError when there is no finite
    maximum; see the module doc."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    names = list(judgements.models)
    m = len(names)
    counts = outcome_counts(judgements.a, judgements.b, judgements.outcome, m)
    wins = wins_from_counts(counts)
    elo = fit_elo_scores(wins, names, where=where)
    total = counts.sum(axis=-1)
    comparisons = total.sum(axis=1) + total.sum(axis=0)
    low, high, failed = elo.copy(), elo.copy(), 0
    if bootstrap > 0:
        draws = bootstrap_scores(counts, elo, bootstrap, seed)
        failed = bootstrap - draws.shape[0]
        if draws.shape[0]:
            alpha = (1.0 - confidence) / 2.0
            low, high = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
        else:
            low, high = np.full(m, -np.inf), np.full(m, np.inf)
    return EloResult(models=names, elo=elo, ci_low=low, ci_high=high, comparisons=comparisons, counts=counts,
                     confidence=confidence, bootstrap=bootstrap, bootstrap_failed=failed, seed=seed)


def bootstrap_scores(counts: np.ndarray, start: np.ndarray, rounds: int, seed: int | None,
                     chunk: int = 256) -> np.ndarray:
    """Scores [R', M] of `rounds` resamples (with replacement) of the judgements behind `counts`
    [M, M, 3]; resamples without a finite maximum are dropped (R' <= rounds)."""
    rng = np.random.default_rng(seed)
    flat = counts.reshape(-1)
    cells = np.flatnonzero(flat)
    n = int(flat.sum())
    p = flat[cells] / n
    out = []
    for begin in range(0, rounds, chunk):
        size = min(chunk, rounds - begin)
        draws = np.zeros((size, flat.size), np.int64)
        draws[:, cells] = rng.multinomial(n, p, size=size)
        wins = wins_from_counts(draws.reshape((size,) + counts.shape))
        scores, ok = fit_elo_scores_batched(wins, start)
        out.append(scores[ok])
    return np.concatenate(out) if out else np.zeros((0, counts.shape[0]))
