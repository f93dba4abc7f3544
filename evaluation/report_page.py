"""REPORT/index.html, built only from what the report folder stores (so `glide report REPORT` rebuilds it
without sampling): settings.json, samples/index.parquet, metrics.json, lineage.json and, when the
memorisation check ran, memorisation.json with its training thumbnails, and, when `glide report
--judgements` fitted it, elo.json (evaluation.report_elo: the Elo table of the pairwise judgements).

    build_report(Path("REPORT"))     # draws plots/ and grids/, writes index.html; returns its path

The page is rendered by jinja2 with autoescaping: prompts and training captions are untrusted text and
appear as text, never markup. Every image is a relative path inside the report folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import shards as sh
from evaluation.report_elo import read_report_elo
from evaluation.report_plots import distance_histogram, sample_grid, tradeoff_plots
from evaluation.sample_cache import read_index
from evaluation.sweep_metrics import accuracy_summary

GRID_SAMPLES = 16
CLOSEST_PAIRS = 8
STORED = ("settings.json", "metrics.json", "lineage.json")

TEMPLATE = "report_template.html"   # jinja2, next to this module (package data)
STYLE = "report_style.css"          # the rules every report page shares (the claims page too)


def report_style():
    """The shared stylesheet, as markup for a template's <style> (a package file, not user text)."""
    from importlib.resources import files

    from markupsafe import Markup

    return Markup(files("evaluation").joinpath(STYLE).read_text())


def _read_json(report: Path, name: str):
    try:
        return json.loads((report / name).read_text())
    except FileNotFoundError:
        raise sh.UserError(f"{report}: not a finished evaluation report (no {name}); run `glide evaluate -o {report}`") \
            from None
    except ValueError as e:
        raise sh.UserError(f"{report / name}: not valid JSON ({e})") from None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _elo_points(value) -> str:
    return "-" if value is None else f"{value:+.1f}"   # None: an interval no bootstrap resample bounded


def grid_rows(index, settings: list[str]) -> dict[str, list[dict]]:
    """The first GRID_SAMPLES samples of each setting, ordered by (seed, prompt_index): the same
    prompts and seeds in every grid."""
    rows = index.to_pylist()
    out = {}
    for name in settings:
        mine = sorted((r for r in rows if r["setting"] == name), key=lambda r: (r["seed"], r["path"]))
        out[name] = mine[:GRID_SAMPLES]
    return out


def build_report(report: Path) -> Path:
    import jinja2

    report = Path(report)
    settings, metrics, lineage = (_read_json(report, name) for name in STORED)
    index = read_index(report)
    per_setting = grid_rows(index, list(settings))
    grids = []
    for name, rows in per_setting.items():
        if rows:
            sample_grid(report, [r["path"] for r in rows], report / "grids" / f"{name}.png")
            grids.append({"setting": name, "file": f"grids/{name}.png"})
    first = next(iter(per_setting.values()), [])
    plots, missing = tradeoff_plots(metrics["settings"], settings, report / "plots")
    accuracy = {name: accuracy_summary(m) for name, m in metrics["settings"].items() if accuracy_summary(m)}
    columns = [a for a in ("background", "colour", "kind", "count", "relation", "all")
               if any(a in acc for acc in accuracy.values())]
    notes = sorted({f"{name}: {n}" if len(metrics["settings"]) == 1 else n
                    for name, m in metrics["settings"].items() for n in m.get("notes", [])})
    memo = _memorisation(report)
    from importlib.resources import files

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(files("evaluation").joinpath(TEMPLATE).read_text()).render(
        style=report_style(), settings=settings, metrics=metrics["settings"], features=metrics["features"], lineage=lineage,
        samples_total=index.num_rows, per_setting=lineage["samples_per_setting"], prompts_count=lineage["prompts"]["count"],
        notes=notes, accuracy=accuracy, accuracy_columns=columns, plots=plots, missing_plots=missing, grids=grids,
        grid_rows=first, memo=memo, elo=read_report_elo(report), lineage_json=json.dumps(lineage, indent=1), fmt=_fmt, pct=_pct,
        elo_points=_elo_points)
    out = report / "index.html"
    sh.write_bytes_atomic(str(out), html.encode())
    return out


def _memorisation(report: Path):
    path = report / "memorisation.json"
    if not path.is_file():
        return None
    import numpy as np

    memo = _read_json(report, "memorisation.json")
    distances = np.array([s["distance"] for s in memo["samples"]])
    distance_histogram(distances, report / "plots" / "memorisation.png")
    closest = sorted(memo["samples"], key=lambda s: s["distance"])[:CLOSEST_PAIRS]
    return {**memo, "histogram": "plots/memorisation.png", "closest": closest,
            "median": float(np.median(distances)), "min": float(distances.min())}
