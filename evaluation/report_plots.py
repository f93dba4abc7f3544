"""The report's figures, drawn with matplotlib (Agg) from what the report stores.

    tradeoff_plots(metrics["settings"], settings, "REPORT/plots")   # the paper's trade-off curves
    sample_grid(report, paths, "REPORT/grids/guidance-3.png")        # torchvision make_grid
    distance_histogram(distances, "REPORT/plots/memorisation.png")

Each trade-off plot has one point per setting, the classifier-free guidance settings joined in order
of their scale (the paper's curves) and CLIP-guided ones as a second series. A plot whose metric no
setting has (the Inception Score on CLIP features, the CLIP score without a CLIP) is not drawn, and
the returned list says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# (file, x metric, y metric, title): the paper's Figure 6 curves, and caption accuracy by scale
TRADEOFFS = (
    ("fid-vs-is.png", "inception_score", "fid", "FID vs Inception Score"),
    ("precision-vs-recall.png", "recall", "precision", "Precision vs recall"),
    ("clip-score-vs-fid.png", "fid", "clip_score", "CLIP score vs FID"),
)
LABELS = {"fid": "FID", "inception_score": "Inception Score", "precision": "precision", "recall": "recall",
          "clip_score": "CLIP score", "caption_accuracy": "caption accuracy (all attributes right)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _value(metrics: dict, key: str):
    if key == "caption_accuracy":
        acc = metrics.get("caption_accuracy")
        return None if acc is None else acc.get("all")
    return metrics.get(key)


def tradeoff_plots(metrics: dict, settings: dict, out_dir: Path) -> tuple[list[dict], list[str]]:
    """([{"file", "title"}], [why a plot is missing]): the trade-off plots of the stored metrics."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn, missing = [], []
    curves = list(TRADEOFFS) + [("caption-accuracy.png", "guidance", "caption_accuracy",
                                 "Caption accuracy by guidance scale")]
    for name, x_key, y_key, title in curves:
        series = {"classifier-free guidance": [], "CLIP guidance": []}
        for setting, info in settings.items():
            m = metrics.get(setting, {})
            clip = info.get("clip_guidance")
            x = (clip if clip is not None else info["guidance"]) if x_key == "guidance" else _value(m, x_key)
            y = _value(m, y_key)
            if x is not None and y is not None:
                series["CLIP guidance" if clip is not None else "classifier-free guidance"].append(
                    (info["clip_guidance"] or info["guidance"], x, y, setting))
        if not any(series.values()):
            missing.append(f"{title}: no setting has both {LABELS.get(x_key, x_key)} and {LABELS[y_key]}")
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
        for label, points in series.items():
            if not points:
                continue
            points.sort()
            ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=label)
            for scale, x, y, _ in points:
                ax.annotate(f"{scale:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("guidance scale" if x_key == "guidance" else LABELS[x_key])
        ax.set_ylabel(LABELS[y_key])
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        drawn.append({"file": f"{out_dir.name}/{name}", "title": title})
    return drawn, missing


def sample_grid(report: Path, paths: Sequence[str], out: Path, per_row: int = 8) -> None:
    """The PNGs `paths` (relative to report) in one grid image, in order (torchvision make_grid)."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    tiles = torch.stack([torch.from_numpy(np.array(Image.open(report / p).convert("RGB"))).permute(2, 0, 1)
                         for p in paths])
    grid = make_grid(tiles, nrow=per_row, padding=2, pad_value=255)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(out)


def distance_histogram(distances: np.ndarray, out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.hist(distances, bins=min(40, max(5, len(distances) // 2)), color="#4a6fa5")
    ax.set_xlabel("cosine distance to the nearest training image (CLIP)")
    ax.set_ylabel("samples")
    ax.set_title("Memorisation check")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
