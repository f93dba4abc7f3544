"""The metrics library side by side with its baselines: Frechet distance, Elo fit, precision/recall.

    python -m benchmarks.metrics [--reps 3] [--judgements 1000000] [--models 20] [--pr-points 50000]
                                 [--pr-dim 128] [--pr-block 4096] [--skip-pr]

1. frechet_distance at d = 2048 vs the formula with scipy.linalg.sqrtm (pytorch-fid's), on the same
   covariances in the same run, repetitions alternating which runs first; medians. Two cases: 5,000
   samples per set (full-rank covariances, the goal: >= 3x faster and equal to 1e-6 relative) and
   1,000 (singular covariances, fewer samples than dimensions: shown beside it, with the exact value
   from the features' nuclear-norm identity, which both are compared against).
2. The Elo fit on --judgements judgements among --models models (string columns as a file gives them,
   true scores spread over 600 points, 10% ties): Judgements.from_table + fit_elo with 1,000 bootstrap
   resamples, as `glide elo fit` runs it (goal: under 2 s), and the point estimate against an independent
   maximum-likelihood fit of the same objective (scipy.optimize.minimize, BFGS, on the win matrix built
   with numpy.add.at): max difference in Elo points (goal <= 0.01).
3. precision_recall (k = 3) on --pr-points x --pr-points features, tiles of --pr-block, vs torch-fidelity's
   memory-saving precision/recall (calculate_precision_recall_part, its default batch of 10,000): seconds,
   the same precision and recall, and peak memory above the inputs (process RSS sampled every 5 ms).
   Ours must stay within its bound: 6 tiles of block^2 float32 plus O(N) per-row state.
ratio = min(speed-up / 3, 2 s / Elo seconds, memory bound / our peak) with the equalities as flags.
Ends with one JSON line {"benchmark": "metrics", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np

FID_GOAL = 3.0
ELO_GOAL_S = 2.0


def _sqrtm_distance(mu1, s1, mu2, s2) -> float:
    import scipy.linalg

    root = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _nuclear_distance(x1, x2) -> float:
    a1 = (x1 - x1.mean(0)).T / np.sqrt(len(x1) - 1)
    a2 = (x2 - x2.mean(0)).T / np.sqrt(len(x2) - 1)
    diff = x1.mean(0) - x2.mean(0)
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum()
                 - 2 * np.linalg.svd(a1.T @ a2, compute_uv=False).sum())


def _features(rng, n, d, shift):
    """Inception-pool-like features: a few hundred strong directions over a weak full-rank floor."""
    basis = rng.standard_normal((256, d)) / 16
    return (rng.standard_normal((n, 256)) @ basis + 0.3 * rng.standard_normal((n, d))
            + shift * np.linspace(0, 1, d)).astype(np.float32)


def bench_frechet(reps: int) -> dict:
    from evaluation import frechet_distance, gaussian_statistics

    rng = np.random.default_rng(0)
    out = {}
    for label, n in (("full rank", 5000), ("singular", 1000)):
        x1, x2 = _features(rng, n, 2048, 0.0), _features(rng, n, 2048, 0.5)
        (mu1, s1), (mu2, s2) = gaussian_statistics(x1), gaussian_statistics(x2)
        times = {"ours": [], "sqrtm": []}
        values = {}
        for rep in range(reps):
            order = ("ours", "sqrtm") if rep % 2 == 0 else ("sqrtm", "ours")
            for side in order:
                fn = frechet_distance if side == "ours" else _sqrtm_distance
                t = time.perf_counter()
                values[side] = fn(mu1, s1, mu2, s2)
                times[side].append(time.perf_counter() - t)
        row = {"n": n, "ours_s": statistics.median(times["ours"]), "sqrtm_s": statistics.median(times["sqrtm"]),
               "ours": values["ours"], "sqrtm": values["sqrtm"],
               "rel_diff_sqrtm": abs(values["ours"] - values["sqrtm"]) / abs(values["sqrtm"])}
        if n <= 2048:  # the exact value from the features (an n x n SVD)
            exact = _nuclear_distance(x1.astype(np.float64), x2.astype(np.float64))
            row.update(exact=exact, rel_err_ours=abs(values["ours"] - exact) / exact,
                       rel_err_sqrtm=abs(values["sqrtm"] - exact) / exact)
        row["speedup"] = row["sqrtm_s"] / row["ours_s"]
        out[label] = row
    return out


def _judgements(n: int, models: int, seed: int = 0):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    names = np.array([f"model-{k:02d}" for k in range(models)])
    true = np.linspace(-300, 300, models)
    i = rng.integers(0, models, n)
    j = (i + rng.integers(1, models, n)) % models
    p = 1 / (1 + 10 ** ((true[j] - true[i]) / 400))
    winner = np.where(rng.random(n) < 0.1, "tie", np.where(rng.random(n) < p, "a", "b"))
    return pa.table({"model_a": names[i], "model_b": names[j], "winner": winner}), names, i, j, winner


def _independent_fit(names, i, j, winner) -> np.ndarray:
    from scipy.optimize import minimize

    m = len(names)
    wins = np.zeros((m, m))
    np.add.at(wins, (i[winner == "a"], j[winner == "a"]), 1.0)
    np.add.at(wins, (j[winner == "b"], i[winner == "b"]), 1.0)
    np.add.at(wins, (i[winner == "tie"], j[winner == "tie"]), 0.5)
    np.add.at(wins, (j[winner == "tie"], i[winner == "tie"]), 0.5)
    scale = np.log(10) / 400

    def objective(s):
        diff = s[None, :] - s[:, None]  # s_j - s_i
        loss = (wins * np.logaddexp(0.0, scale * diff)).sum()
        r = wins / (1 + np.exp(-scale * diff))  # A_ij (1 - p_ij)
        return loss, -scale * (r.sum(axis=1) - r.sum(axis=0))

    s = minimize(objective, np.zeros(m), jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 10000}).x
    return s - s.mean()


def bench_elo(n: int, models: int, reps: int) -> dict:
    from evaluation import Judgements, fit_elo

    table, names, i, j, winner = _judgements(n, models)
    fit_elo(Judgements.from_table(table.slice(0, 10_000), "warm-up"), bootstrap=10)
    full, point = [], []
    for _ in range(reps):
        t = time.perf_counter()
        judgements = Judgements.from_table(table, "bench")
        result = fit_elo(judgements, bootstrap=1000, seed=0)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        fit_elo(Judgements.from_table(table, "bench"), bootstrap=0)
        point.append(time.perf_counter() - t)
    t = time.perf_counter()
    reference = _independent_fit(names, i, j, winner)
    scipy_s = time.perf_counter() - t
    order = np.argsort(names)  # Judgements sorts the model names; these are sorted already
    diff = float(np.abs(result.elo - reference[order]).max())
    return {"judgements": n, "models": models, "fit_with_bootstrap_s": statistics.median(full),
            "point_fit_s": statistics.median(point), "scipy_bfgs_s": scipy_s, "max_diff_elo": diff,
            "bootstrap_failed": result.bootstrap_failed,
            "widest_interval": float((result.ci_high - result.ci_low).max())}


class PeakRss:
    """Peak resident memory of this process above its level at entry, sampled every 5 ms."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()

    def __enter__(self):
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.extra = self.peak - self.base


def bench_precision_recall(n: int, dim: int, block: int) -> dict:
    import gc

    import torch
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    from evaluation import precision_recall

    rng = np.random.default_rng(1)
    real = rng.standard_normal((n, dim), dtype=np.float32)
    fake = (rng.standard_normal((n, dim), dtype=np.float32) * 1.05 + 0.05).astype(np.float32)
    precision_recall(real[:2000], fake[:2000], block_size=block)  # warm-up
    gc.collect()
    with PeakRss() as ours_mem:
        t = time.perf_counter()
        ours = precision_recall(real, fake, k=3, block_size=block)
        ours_s = time.perf_counter() - t
    gc.collect()
    with PeakRss() as theirs_mem:
        t = time.perf_counter()
        with torch.inference_mode():
            precision, recall = calculate_precision_recall_part(torch.from_numpy(fake), torch.from_numpy(real), 3,
                                                                10_000)
        theirs_s = time.perf_counter() - t
    bound = 6 * block * block * 4 + 64 * n  # tiles (distance, its transpose copy, the addmm input, topk) + per-row state
    return {"points": n, "dim": dim, "block": block, "ours_s": ours_s, "torch_fidelity_s": theirs_s,
            "ours": [ours.precision, ours.recall], "torch_fidelity": [precision, recall],
            "max_abs_diff": max(abs(ours.precision - precision), abs(ours.recall - recall)),
            "ours_peak_mib": ours_mem.extra / 2**20, "torch_fidelity_peak_mib": theirs_mem.extra / 2**20,
            "bound_mib": bound / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--judgements", type=int, default=1_000_000)
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--pr-points", type=int, default=50_000)
    p.add_argument("--pr-dim", type=int, default=128)
    p.add_argument("--pr-block", type=int, default=4096)
    p.add_argument("--skip-pr", action="store_true")
    args = p.parse_args(argv)

    fd = bench_frechet(args.reps)
    print("frechet_distance at d = 2048 (medians of", args.reps, "alternating repetitions)")
    for label, r in fd.items():
        line = (f"  {label:<9} n={r['n']:<5} ours {r['ours_s']:.2f} s  sqrtm {r['sqrtm_s']:.2f} s  "
                f"x{r['speedup']:.1f}  |ours - sqrtm| / sqrtm = {r['rel_diff_sqrtm']:.1e}")
        if "exact" in r:
            line += f"  vs exact: ours {r['rel_err_ours']:.1e}, sqrtm {r['rel_err_sqrtm']:.1e}"
        print(line)
    elo = bench_elo(args.judgements, args.models, args.reps)
    print(f"Elo fit, {elo['judgements']:,} judgements among {elo['models']} models")
    print(f"  from_table + fit_elo with 1000 bootstrap resamples: {elo['fit_with_bootstrap_s']:.2f} s "
          f"(goal < {ELO_GOAL_S:.0f} s); point estimate alone {elo['point_fit_s']:.2f} s")
    print(f"  independent fit (scipy BFGS) {elo['scipy_bfgs_s']:.2f} s; max |difference| "
          f"{elo['max_diff_elo']:.2e} Elo points; widest 95% interval {elo['widest_interval']:.1f}")
    pr = None
    if not args.skip_pr:
        pr = bench_precision_recall(args.pr_points, args.pr_dim, args.pr_block)
        print(f"precision/recall k=3, {pr['points']:,} x {pr['points']:,} features of {pr['dim']} dims")
        print(f"  ours (block {pr['block']}): {pr['ours_s']:.1f} s, peak +{pr['ours_peak_mib']:.0f} MiB "
              f"(bound {pr['bound_mib']:.0f} MiB), precision/recall {pr['ours'][0]:.5f} / {pr['ours'][1]:.5f}")
        print(f"  torch-fidelity (part, batch 10000): {pr['torch_fidelity_s']:.1f} s, peak "
              f"+{pr['torch_fidelity_peak_mib']:.0f} MiB, precision/recall {pr['torch_fidelity'][0]:.5f} / "
              f"{pr['torch_fidelity'][1]:.5f}; max |difference| {pr['max_abs_diff']:.1e}")

    full = fd["full rank"]
    ratios = [full["speedup"] / FID_GOAL, ELO_GOAL_S / elo["fit_with_bootstrap_s"]]
    if pr is not None:
        ratios.append(pr["bound_mib"] / max(pr["ours_peak_mib"], 1e-9))
    result = {"benchmark": "metrics", "ratio": round(min(ratios), 3),
              "fid_speedup": round(full["speedup"], 2), "fid_rel_diff": full["rel_diff_sqrtm"],
              "fid_equal_1e-6": full["rel_diff_sqrtm"] <= 1e-6,
              "fid_singular_rel_err": fd["singular"]["rel_err_ours"],
              "elo_s": round(elo["fit_with_bootstrap_s"], 3), "elo_point_s": round(elo["point_fit_s"], 3),
              "elo_max_diff": elo["max_diff_elo"], "elo_equal": elo["max_diff_elo"] <= 0.01}
    if pr is not None:
        result.update(pr_s=round(pr["ours_s"], 1), pr_baseline_s=round(pr["torch_fidelity_s"], 1),
                      pr_peak_mib=round(pr["ours_peak_mib"], 1), pr_baseline_peak_mib=round(pr["torch_fidelity_peak_mib"], 1),
                      pr_bound_mib=round(pr["bound_mib"], 1), pr_max_diff=pr["max_abs_diff"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
