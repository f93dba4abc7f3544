"""Applying a safety filter: the torch kernel (FilterScorer) vs scikit-learn's decision_function.

    python -m benchmarks.filter_apply [--rows 1000000] [--dim 512] [--reps 3]

One RBF-SVM (SVC, C=10, gamma="scale", balanced classes) is fitted on --train labelled synthetic
CLIP-like embeddings (clustered unit vectors, float16, --dim wide; a category direction of random
strength for positives, near-miss look-alikes among the negatives), and its threshold is tuned on
held-out positives as fit-filters does (FNR <= 1% at 95% confidence). Then --rows embeddings of the
same kind are scored by:
  sklearn   SVC.decision_function (libsvm, float64; one thread: libsvm has no others), fed in
            chunks of 50,000 rows so its float64 copy of the input stays small
  torch     FilterScorer as `glide filter` runs it (float32 matmul kernel on all torch threads, rows
            near the threshold rescored in float64), and the same on 1 thread, shown beside it
Each side first runs once untimed on 2,000 rows (warm-up); then the same inputs, repetitions
alternating which side runs first; seconds are medians. Decisions
(score >= threshold) must be identical on every row (asserted); scores agree to float tolerance.
ratio = (sklearn seconds / torch seconds) / 10: the goal is >= 10x, so >= 1 means it holds.
Ends with one JSON line {"benchmark": "filter_apply", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

GOAL = 10.0
SKLEARN_CHUNK = 50_000


def embeddings(n: int, dim: int, seed: int, positive: float = 0.3):
    """(n, dim) float16 unit vectors like CLIP's (cosine ~0.5-0.9 to each other) and their labels."""
    basis = np.random.default_rng(99).standard_normal((10, dim))
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float16)
    labels = np.empty(n, dtype=bool)
    for start in range(0, n, 100_000):  # in chunks: 1M x 512 float64 at once would be 4 GB
        m = min(100_000, n - start)
        x = basis[rng.integers(0, 8, m)] * 1.0 + rng.normal(0, 1.0 / np.sqrt(dim), (m, dim))
        pos = rng.random(m) < positive
        near = ~pos & (rng.random(m) < 0.2)
        x += (pos * rng.uniform(0.3, 1.0, m))[:, None] * basis[8]
        x += (near * rng.uniform(0.3, 0.8, m))[:, None] * (0.6 * basis[8] + 0.8 * basis[9])
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        labels[start:start + m] = pos
    return out, labels


def fitted_filter(train: int, dim: int, seed: int):
    from sklearn.svm import SVC

    from filtering.fnr_threshold import tune_threshold
    from filtering.svm_filter import SvmFilter

    x, y = embeddings(2 * train, dim, seed)
    x = x.astype(np.float64)
    svc = SVC(kernel="rbf", C=10.0, gamma="scale", class_weight="balanced").fit(x[:train], y[:train])
    held = svc.decision_function(x[train:])
    choice = tune_threshold(held[y[train:]], 0.01)
    return svc, SvmFilter.from_svc("people", svc, threshold=choice.threshold, embedding_model="synthetic")


def sklearn_scores(svc, x: np.ndarray) -> np.ndarray:
    return np.concatenate([svc.decision_function(x[i:i + SKLEARN_CHUNK].astype(np.float64))
                           for i in range(0, len(x), SKLEARN_CHUNK)])


def main(argv=None) -> int:
    import torch

    from filtering.svm_filter import FilterScorer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="embeddings scored (default: 1,000,000)")
    p.add_argument("--dim", type=int, default=512, help="embedding size (default: 512, ViT-B/16)")
    p.add_argument("--train", type=int, default=2000, help="labelled pairs the SVM is fitted on (default: 2000)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per side (default: 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    threads = torch.get_num_threads()
    print(f"filter_apply: fitting the SVM on {args.train:,} pairs, {args.dim}-d ...", file=sys.stderr, flush=True)
    svc, filt = fitted_filter(args.train, args.dim, args.seed)
    print(f"filter_apply: {len(filt.dual_coef):,} support vectors; generating {args.rows:,} embeddings ...",
          file=sys.stderr, flush=True)
    x, _ = embeddings(args.rows, args.dim, args.seed + 1)

    def torch_side(n_threads, rows):
        def run():
            torch.set_num_threads(n_threads)
            try:
                scorer = FilterScorer([filt])
                return scorer.scores(rows)[:, 0], scorer.rechecked
            finally:
                torch.set_num_threads(threads)
        return run

    def make_sides(rows):
        return {"sklearn": lambda: (sklearn_scores(svc, rows), 0), "torch": torch_side(threads, rows),
                "torch_1_thread": torch_side(1, rows)}

    for warm_up in make_sides(x[:2000]).values():  # untimed: BLAS and oneDNN set up on first use
        warm_up()
    sides = make_sides(x)
    times = {s: [] for s in sides}
    outputs, rechecked = {}, 0
    for rep in range(args.reps):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for side in order:
            t0 = time.perf_counter()
            outputs[side], checked = sides[side]()
            times[side].append(time.perf_counter() - t0)
            rechecked = max(rechecked, checked)
            print(f"  rep {rep + 1}/{args.reps} {side}: {times[side][-1]:.2f} s", file=sys.stderr, flush=True)
        reference = outputs["sklearn"] >= filt.threshold
        for side in ("torch", "torch_1_thread"):
            differ = int(np.count_nonzero((outputs[side] >= filt.threshold) != reference))
            assert differ == 0, f"{side}: {differ} decisions differ from decision_function"
    max_diff = float(max(np.abs(outputs[s] - outputs["sklearn"]).max() for s in ("torch", "torch_1_thread")))
    med = {s: statistics.median(t) for s, t in times.items()}
    speedup, speedup_1 = med["sklearn"] / med["torch"], med["sklearn"] / med["torch_1_thread"]
    removed = float(np.mean(outputs["sklearn"] >= filt.threshold))

    print(f"\nfilter_apply: one RBF-SVM ({len(filt.dual_coef):,} support vectors, {args.dim}-d) on {args.rows:,} "
          f"embeddings; medians of {args.reps}")
    print(f"{'side':<34}{'seconds':>10}{'rows/s':>14}{'speed-up':>10}")
    for side, label in (("sklearn", "scikit-learn decision_function"),
                        ("torch", f"torch kernel, {threads} threads"), ("torch_1_thread", "torch kernel, 1 thread")):
        print(f"{label:<34}{med[side]:>10.2f}{args.rows / med[side]:>14,.0f}{med['sklearn'] / med[side]:>9.1f}x")
    print(f"identical decisions on all {args.rows:,} rows (threshold {filt.threshold:.4f}, removes "
          f"{removed:.1%}); max |score difference| {max_diff:.2e}; {rechecked:,} rows rescored in float64")
    print(json.dumps({"benchmark": "filter_apply", "ratio": round(speedup / GOAL, 3), "speedup": round(speedup, 2),
                      "speedup_1_thread": round(speedup_1, 2), "sklearn_s": round(med["sklearn"], 3),
                      "torch_s": round(med["torch"], 3), "torch_1_thread_s": round(med["torch_1_thread"], 3),
                      "rows": args.rows, "dim": args.dim, "support_vectors": len(filt.dual_coef),
                      "torch_threads": threads, "identical_decisions": True, "max_score_diff": max_diff,
                      "rows_rescored_float64": rechecked, "goal": GOAL}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
