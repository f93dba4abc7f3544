"""The filter report's two PNG plots per filter (matplotlib, Agg: no display needed).

    score_histograms_png   held-out scores per class, and every pair's score, threshold marked
    roc_png                held-out ROC, whole and zoomed on the high-recall corner, threshold marked
"""
from __future__ import annotations

import io

import numpy as np

from filtering.svm_filter import SvmFilter

POSITIVE, NEGATIVE, ALL, THRESHOLD = "#c0392b", "#2e86c1", "#7f8c8d", "#111111"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def score_histograms_png(filt: SvmFilter, edges: list[float], all_counts: np.ndarray) -> bytes:
    """Left: held-out labelled scores by class. Right: all pairs' scores (log counts)."""
    fig = _figure(9.0, 3.2)
    left, right = fig.subplots(1, 2)
    edges_arr = np.asarray(edges)
    scores = np.clip(np.asarray(filt.held_out_scores, dtype=np.float64), edges_arr[0], edges_arr[-1])
    labels = np.asarray(filt.held_out_labels, dtype=bool)
    left.hist(scores[~labels], bins=edges_arr, color=NEGATIVE, alpha=0.6, label=f"negative ({(~labels).sum()})")
    left.hist(scores[labels], bins=edges_arr, color=POSITIVE, alpha=0.6, label=f"positive ({labels.sum()})")
    left.set_title(f"{filt.name}: held-out labelled pairs")
    right.stairs(np.asarray(all_counts), edges_arr, fill=True, color=ALL, alpha=0.7,
                 label=f"all pairs ({int(np.sum(all_counts)):,})")
    right.set_yscale("log")
    right.set_title(f"{filt.name}: every pair scored")
    for ax in (left, right):
        ax.axvline(filt.threshold, color=THRESHOLD, linestyle="--", label=f"threshold {filt.threshold:.3f}")
        ax.set_xlabel("SVM score (removed at or right of the threshold)")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=8)
    return _png(fig)


def roc_png(filt: SvmFilter) -> bytes:
    """ROC of the held-out pairs with the chosen threshold's point; right: the corner FNR <= 10%."""
    from sklearn.metrics import roc_curve

    fig = _figure(9.0, 3.4)
    full, zoom = fig.subplots(1, 2)
    labels = np.asarray(filt.held_out_labels, dtype=bool)
    scores = np.asarray(filt.held_out_scores, dtype=np.float64)
    fpr, tpr, _ = roc_curve(labels, scores)
    point_fpr = float(np.mean(scores[~labels] >= filt.threshold))
    point_tpr = float(np.mean(scores[labels] >= filt.threshold))
    bound = filt.info.get("fnr_upper_95")
    for ax in (full, zoom):
        ax.plot(fpr, tpr, color=POSITIVE, linewidth=1.5, label="held-out ROC")
        ax.plot([point_fpr], [point_tpr], "o", color=THRESHOLD,
                label=f"threshold: TPR {point_tpr:.3f}, FPR {point_fpr:.3f}")
        if bound is not None:
            ax.axhline(1 - bound, color=ALL, linestyle=":", label=f"1 - FNR 95% bound ({1 - bound:.3f})")
        ax.set_xlabel("false positive rate (negatives removed)")
        ax.set_ylabel("true positive rate (positives removed)")
    full.plot([0, 1], [0, 1], color=ALL, linewidth=0.8)
    full.set_title(f"{filt.name}: ROC (held-out)")
    full.legend(fontsize=8, loc="lower right")
    zoom.set_ylim(0.9, 1.001)
    zoom.set_xlim(0, max(0.05, min(1.0, point_fpr * 2 + 0.02)))
    zoom.set_title("zoom: the high-recall corner")
    return _png(fig)
