"""CLAIMS/index.html: the paper's claims as the experiment measured them, built only from what CLAIMS
stores (claims.json, the draws' PNGs, a copy of the evaluation's metrics), so it can be rebuilt
without sampling.

    build_claims_page(Path("CLAIMS"))      # draws plots/ and grids/, writes index.html; returns its path

claims.json: {"command", "commit",
  "claims": {"guidance": evaluation.claims.guidance_claim(...), "clip_guidance": ...clip_guidance_claim(...),
             "filtering": ...filtering_claim(...), "inpainting": ...inpainting_claim(...),
             "fewer_steps": ...fewer_steps_claim(...)},
  "evaluation": {"metrics", "settings"} (the evaluation report's, for the trade-off curves),
  "draws": {model: {category: [PNG paths]}}, "detector": its calibration,
  "inpainting": evaluation.inpainting.inpainting_table(...) plus "prompts", "images" ({mode: [PNG paths]}), "settings",
  "missing": {claim: why it was not measured}}.
Rendered by jinja2 with autoescaping: prompts and paths appear as text, never markup.
"""
from __future__ import annotations

import json
from pathlib import Path

import shards as sh
from evaluation.report_page import _fmt, _pct, report_style
from evaluation.report_plots import _pyplot, sample_grid, tradeoff_plots

CLAIMS_FILE = "claims.json"
TEMPLATE = "claims_template.html"   # jinja2, next to this module (package data)
GRID_SAMPLES = 16


def read_claims(out: Path) -> dict:
    try:
        return json.loads((out / CLAIMS_FILE).read_text())
    except FileNotFoundError:
        raise sh.UserError(f"{out}: no {CLAIMS_FILE} (the claims stage of `glide run` writes it)") from None
    except ValueError as e:
        raise sh.UserError(f"{out / CLAIMS_FILE}: not valid JSON ({e})") from None


def draw_rate_plot(rows: list[dict], out: Path) -> None:
    """Grouped bars: per category, the share of samples showing it, filtered vs unfiltered model."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    x = np.arange(len(rows))
    for offset, key, label, colour in ((-0.2, "unfiltered_rate", "trained on the unfiltered crawl", "#c0504d"),
                                       (0.2, "filtered_rate", "trained on the filtered pairs", "#4a6fa5")):
        values = [r[key] for r in rows]
        ax.bar(x + offset, values, width=0.4, label=label, color=colour)
        for xi, v in zip(x + offset, values):
            ax.annotate(f"{100 * v:.0f}%", (xi, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
    ax.set_xticks(x, [r["category"] for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("samples showing the category")
    ax.set_title("Asked for a filtered category: what each model draws")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def clip_guidance_plot(rows: list[dict], out: Path) -> None:
    """CLIP score against all-attribute caption accuracy, one point per setting: the classifier-free
    scales joined by a line, the CLIP-guided ones apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for guided, colour, label in ((False, "#4a6fa5", "classifier-free guidance"), (True, "#c0504d", "CLIP guidance")):
        pts = [r for r in rows if (r["clip_guidance"] is not None) == guided and r["clip_score"] is not None
               and r["all_attributes"] is not None]
        if not pts:
            continue
        ax.plot([r["all_attributes"] for r in pts], [r["clip_score"] for r in pts], "o-" if not guided else "s",
                color=colour, label=label)
        for r in pts:
            scale = r["clip_guidance"] if guided else r["guidance"]
            ax.annotate(f"{scale:g}", (r["all_attributes"], r["clip_score"]), textcoords="offset points", xytext=(4, 3),
                        fontsize=8)
    ax.set_xlabel("caption accuracy (all attributes)")
    ax.set_ylabel("CLIP score (clean CLIP)")
    ax.set_title("What CLIP sees against what the samples show")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def fewer_steps_plot(rows: list[dict], out: Path) -> None:
    """Two panels per sampler: all-attribute caption accuracy and FID, base and upsampler rows side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    labels = [f"{r['stage']}\n{r['steps']}" for r in rows]
    colours = ["#4a6fa5" if r["stage"] == "base" else "#9bbb59" for r in rows]
    for ax, key, title in ((axes[0], "all_attributes", "caption accuracy (all attributes)"), (axes[1], "fid", "FID")):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        ax.bar(range(len(rows)), values, color=colours)
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylim(0, 1)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def build_claims_page(out: Path) -> Path:
    import jinja2

    out = Path(out)
    data = read_claims(out)
    claims = data.get("claims", {})
    plots, plot_notes = [], []
    evaluation = data.get("evaluation")
    if evaluation:
        plots, plot_notes = tradeoff_plots(evaluation["metrics"]["settings"], evaluation["settings"], out / "plots")
    filtering = claims.get("filtering")
    if filtering:
        draw_rate_plot(filtering["rows"], out / "plots" / "draw-rates.png")
    clip_guidance = claims.get("clip_guidance")
    if clip_guidance:
        clip_guidance_plot(clip_guidance["rows"], out / "plots" / "clip-guidance.png")
    fewer_steps = claims.get("fewer_steps")
    if fewer_steps:
        fewer_steps_plot(fewer_steps["rows"], out / "plots" / "fewer-steps.png")
    grids = []
    for model, categories in (data.get("draws") or {}).items():
        for category, paths in categories.items():
            name = f"grids/{model}-{category}.png"
            sample_grid(out, paths[:GRID_SAMPLES], out / name)
            grids.append({"model": model, "category": category, "file": name})
    guidance_grids = []
    samples = data.get("guidance_samples") or {}
    for name, paths in (samples.get("settings") or {}).items():
        file = f"grids/guidance-{name}.png"
        sample_grid(out, paths[:GRID_SAMPLES], out / file)
        guidance_grids.append({"setting": name, "file": file})
    inpaint_grids = []
    for key, label in (("masked", "the masks (grey: erased)"), ("finetuned", "fine-tuned for inpainting"),
                       ("replace", "base, replacement mode")):
        paths = ((data.get("inpainting") or {}).get("images") or {}).get(key)
        if paths:
            name = f"grids/inpainting-{key}.png"
            sample_grid(out, paths[:GRID_SAMPLES], out / name)
            inpaint_grids.append({"label": label, "file": name})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.filters["pct"], env.filters["num"] = _pct, _fmt
    html = env.get_template(TEMPLATE).render(style=report_style(), data=data, claims=claims, plots=plots, plot_notes=plot_notes,
                                             draw_plot="plots/draw-rates.png" if filtering else None, grids=grids,
                                             steps_plot="plots/fewer-steps.png" if fewer_steps else None,
                                             clip_plot="plots/clip-guidance.png" if clip_guidance else None,
                                             inpaint_grids=inpaint_grids, guidance_grids=guidance_grids,
                                             guidance_prompts=(samples.get("prompts") or [])[:GRID_SAMPLES])
    page = out / "index.html"
    sh.write_bytes_atomic(str(page), html.encode())
    return page
