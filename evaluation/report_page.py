"""REPORT/index.html, built only from what the report folder stores (so `glide report REPORT` rebuilds it
without sampling): settings.json, samples/index.parquet, metrics.json, lineage.json and, when the
memorisation check ran, memorisation.json with its training thumbnails.

    build_report(Path("REPORT"))     # draws plots/ and grids/, writes index.html; returns its path

The page is rendered by jinja2 with autoescaping: prompts and training captions are untrusted text and
appear as text, never markup. Every image is a relative path inside the report folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import shards as sh
from evaluation.report_plots import distance_histogram, sample_grid, tradeoff_plots
from evaluation.sample_cache import read_index
from evaluation.sweep_metrics import accuracy_summary

GRID_SAMPLES = 16
CLOSEST_PAIRS = 8
STORED = ("settings.json", "metrics.json", "lineage.json")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GLIDE evaluation report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { width: 370px; margin: 4px; border: 1px solid #eee; }
.grid { display: inline-block; margin: 6px 12px 6px 0; vertical-align: top; }
.grid img { image-rendering: pixelated; width: 420px; border: 1px solid #ddd; }
.pair img { width: 96px; height: 96px; image-rendering: pixelated; }
.note { color: #666; } code { background: #f5f5f5; padding: 0 3px; } pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
</style></head><body>
<h1>GLIDE evaluation report</h1>
<p>{{ samples_total }} samples in {{ settings|length }} settings, {{ per_setting }} per setting, from
{{ prompts_count }} prompts. Model <code>{{ lineage.model.path }}</code>{% if lineage.upsampler %}, upsampler
<code>{{ lineage.upsampler.path }}</code>{% endif %}. Created {{ lineage.created }}.</p>

<h2>Features</h2>
<p>Image metrics computed on <b>{{ features.network }}</b> features ({{ features.features }}) from
<code>{{ features.weights or features.exact_spec or features.spec }}</code>{% if features.weights_sha256 %}
(sha256 <code>{{ features.weights_sha256[:16] }}</code>){% endif %}; resize: {{ features.resize }}.
{% if features.network != "inception-v3" %}<br><span class="note">Not the paper's FID: the numbers compare
settings with each other on these features, not with published Inception FIDs.</span>{% endif %}</p>

<h2>Metrics per setting</h2>
<table id="metrics"><tr><th>setting</th><th>guidance</th><th>CLIP guidance</th><th>FID</th><th>Inception Score</th>
<th>precision</th><th>recall</th><th>CLIP score</th><th>samples</th></tr>
{% for name, s in settings.items() %}{% set m = metrics[name] %}
<tr><td>{{ name }}</td><td class="num">{{ s.guidance }}</td><td class="num">{{ s.clip_guidance if s.clip_guidance is not none else "-" }}</td>
<td class="num">{{ fmt(m.fid) }}</td><td class="num">{{ fmt(m.inception_score) }}{% if m.inception_score_std is not none %} &plusmn; {{ fmt(m.inception_score_std) }}{% endif %}</td>
<td class="num">{{ fmt(m.precision) }}</td><td class="num">{{ fmt(m.recall) }}</td><td class="num">{{ fmt(m.clip_score) }}</td>
<td class="num">{{ m.samples }}</td></tr>{% endfor %}
</table>
{% for note in notes %}<div class="note">{{ note }}</div>{% endfor %}

{% if accuracy %}<h2>Caption accuracy (scene classifier)</h2>
<p>Share of samples whose pixels show what the caption says, read by the scene classifier trained on the
sample world's ground truth (<code>{{ lineage.scene_classifier.path }}</code>{% if lineage.scene_classifier.get('holdout') %},
held-out accuracy on real world images: {% for k, v in lineage.scene_classifier.holdout.items() %}{{ k }} {{ pct(v) }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}).</p>
<table id="caption-accuracy"><tr><th>setting</th>{% for a in accuracy_columns %}<th>{{ a }}</th>{% endfor %}</tr>
{% for name, acc in accuracy.items() %}<tr><td>{{ name }}</td>{% for a in accuracy_columns %}<td class="num">{{ pct(acc.get(a)) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}

<h2>Trade-off curves</h2>
<div class="plots">{% for p in plots %}<img src="{{ p.file }}" alt="{{ p.title }}">{% endfor %}</div>
{% for m in missing_plots %}<div class="note">{{ m }}</div>{% endfor %}

<h2>Samples per setting (same prompts and seeds)</h2>
<p class="note">Each grid holds the same {{ grid_rows|length }} (prompt, seed) pairs in the same order.</p>
{% for g in grids %}<div class="grid"><div><b>{{ g.setting }}</b></div><img src="{{ g.file }}" alt="samples of {{ g.setting }}"></div>{% endfor %}
<table id="grid-prompts"><tr><th>#</th><th>prompt</th><th>seed</th></tr>
{% for r in grid_rows %}<tr><td class="num">{{ loop.index }}</td><td>{{ r.prompt }}</td><td class="num">{{ r.seed }}</td></tr>{% endfor %}</table>

{% if memo %}<h2>Memorisation check</h2>
<p>Each sample's nearest training image in CLIP space ({{ memo.searched }} training images of
<code>{{ memo.dataset }}</code>, CLIP <code>{{ memo.clip }}</code>): median cosine distance {{ fmt(memo.median) }},
smallest {{ fmt(memo.min) }}.</p>
<div class="plots"><img src="{{ memo.histogram }}" alt="distances to the nearest training image"></div>
<table id="closest-pairs"><tr><th>sample</th><th>nearest training image</th><th>distance</th><th>prompt</th><th>training caption</th></tr>
{% for p in memo.closest %}<tr class="pair"><td><img src="{{ p.path }}" alt="sample"></td><td><img src="{{ p.train_image }}" alt="training image"></td>
<td class="num">{{ fmt(p.distance) }}</td><td>{{ p.prompt }}</td><td>{{ p.train_caption }}</td></tr>{% endfor %}</table>{% endif %}

<h2>Configuration and lineage</h2>
<table id="lineage">
<tr><th>model</th><td><code>{{ lineage.model.path }}</code> step {{ lineage.model.step }}, weights {{ lineage.model.sha256[:16] }}</td></tr>
{% if lineage.upsampler %}<tr><th>upsampler</th><td><code>{{ lineage.upsampler.path }}</code> step {{ lineage.upsampler.step }}, weights {{ lineage.upsampler.sha256[:16] }}</td></tr>{% endif %}
{% if lineage.clip %}<tr><th>noised CLIP</th><td><code>{{ lineage.clip.path }}</code>, weights {{ lineage.clip.sha256[:16] }}</td></tr>{% endif %}
<tr><th>prompts</th><td><code>{{ lineage.prompts.path }}</code>, {{ lineage.prompts.count }} prompts, sha256 {{ lineage.prompts.sha256[:16] }}</td></tr>
<tr><th>reference</th><td><code>{{ lineage.reference.folder }}</code>, {{ lineage.reference.count }} images, listing sha256 {{ lineage.reference.listing_sha256[:16] }}</td></tr>
<tr><th>sampler</th><td>{% for k, v in lineage.sampler.items() %}{{ k }}={{ v }} {% endfor %}</td></tr>
<tr><th>command</th><td><code>{{ lineage.command }}</code></td></tr>
</table>
<pre>{{ lineage_json }}</pre>
</body></html>
"""


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
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        settings=settings, metrics=metrics["settings"], features=metrics["features"], lineage=lineage,
        samples_total=index.num_rows, per_setting=lineage["samples_per_setting"], prompts_count=lineage["prompts"]["count"],
        notes=notes, accuracy=accuracy, accuracy_columns=columns, plots=plots, missing_plots=missing, grids=grids,
        grid_rows=first, memo=memo, lineage_json=json.dumps(lineage, indent=1), fmt=_fmt, pct=_pct)
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
