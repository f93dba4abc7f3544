"""The filter report: one HTML page a person reads to decide whether to trust the filters.

    REPORT/index.html               per filter: the figures (FNR, its 95% bound, positives it rests on,
                                    threshold, fraction removed), score histograms per class, the ROC with
                                    the threshold marked, and the pairs nearest the boundary on both sides
    REPORT/<filter>_scores.png, REPORT/<filter>_roc.png, REPORT/thumbs/<filter>_<side>_<i>.jpg

Written by `glide fit-filters` (FILTERS/report) and `glide filter` (DATASET_FILTERED/report).
Captions and uids come from the web: they are escaped, never markup; file names never come from them.
"""
from __future__ import annotations

import html
from typing import Optional, Sequence

import shards as sh
from filtering.report_plots import roc_png, score_histograms_png
from filtering.score_summary import Example, ScoreSummary
from filtering.svm_filter import SvmFilter

CAPTION_CHARS = 160

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table.facts{border-collapse:collapse;font-size:14px}table.facts td{padding:2px 12px 2px 0}
table.facts td:first-child{color:#666}img.plot{max-width:100%;display:block;margin:8px 0}
.examples{display:flex;flex-wrap:wrap;gap:8px}.card{width:132px;font-size:11px;line-height:1.3}
.card img,.card .noimg{width:128px;height:128px;object-fit:contain;background:#eee;display:block}
.card .noimg{display:flex;align-items:center;justify-content:center;color:#888}
.score{font-weight:bold}.uid{color:#999;word-break:break-all}.side{font-size:15px;margin:14px 0 6px}
.bound{background:#f4f6f7;padding:6px 10px;border-left:3px solid #c0392b;font-size:14px}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * float(x):.2f}%"


def write_report(folder: str, *, title: str, facts: Sequence[tuple[str, str]], filters: Sequence[SvmFilter],
                 summary: ScoreSummary, removed_first: Optional[dict[str, int]] = None,
                 labels: Optional[dict[str, dict[str, bool]]] = None) -> str:
    """Write the report into `folder`; returns the path of its index.html.

    `removed_first`: pairs each filter removed as the first to fire (the filter stage's reject
    reasons); `labels`: {filter: {uid: label}} to mark examples a person labelled.
    """
    fs, root = sh.url_to_fs(folder)
    if fs.exists(sh.join(root, "thumbs")):
        fs.rm(sh.join(root, "thumbs"), recursive=True)  # a rerun must not show the last run's examples
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1><table class='facts'>"]
    parts += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts]
    parts.append(f"<tr><td>pairs scored</td><td>{summary.rows:,}</td></tr><tr><td>removed by any filter"
                 f"</td><td>{summary.any_fired:,} ({_pct(summary.any_fired / max(summary.rows, 1))})</td></tr>"
                 "</table>")
    for filt in filters:
        parts.append(_filter_section(folder, filt, summary, removed_first, (labels or {}).get(filt.name, {})))
    parts.append("</body></html>\n")
    path = sh.join(folder, "index.html")
    sh.write_bytes_atomic(path, "".join(parts).encode("utf-8"))
    return path


def _filter_section(folder: str, filt: SvmFilter, summary: ScoreSummary, removed_first, labels) -> str:
    name, info = filt.name, filt.info
    sh.write_bytes_atomic(sh.join(folder, f"{name}_scores.png"),
                          score_histograms_png(filt, summary.edges[name], summary.counts[name]))
    sh.write_bytes_atomic(sh.join(folder, f"{name}_roc.png"), roc_png(filt))
    fired = summary.fired[name]
    rows = [("threshold (removed when score >=)", f"{filt.threshold:.5f}"),
            ("false-negative rate on held-out positives", f"{_pct(info.get('fnr'))} "
             f"({info.get('misses', 'n/a')} missed of {info.get('held_out_positives', 'n/a')})"),
            ("one-sided 95% upper bound (Clopper-Pearson)", _pct(info.get("fnr_upper_95"))),
            ("target false-negative rate", _pct(info.get("target_fnr"))),
            ("held-out negatives removed", _pct(info.get("held_out_negatives_removed"))),
            ("pairs it fires on", f"{fired:,} of {summary.rows:,} ({_pct(fired / max(summary.rows, 1))})")]
    if removed_first is not None:
        rows.append(("removed with this filter as the first to fire", f"{removed_first.get(name, 0):,}"))
    rows += [("C, gamma", f"{info.get('C', 'n/a')}, {filt.gamma:.4g} ({info.get('gamma_scale', 'n/a')} x scale)"),
             ("support vectors", f"{len(filt.dual_coef):,}"),
             ("cross-validation AUC / held-out AUC",
              f"{info.get('cv_auc', float('nan')):.4f} / {info.get('held_out_auc', float('nan')):.4f}"),
             ("labels: training / held-out", f"{info.get('train_positives', '?')}+ {info.get('train_negatives', '?')}- "
              f"/ {info.get('held_out_positives', '?')}+ {info.get('held_out_negatives', '?')}-"),
             ("embedding model", filt.embedding_model)]
    out = [f"<h2 id='{name}'>{_e(name)}</h2><table class='facts'>"]
    out += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    out.append(f"<p class='bound'>With 95% confidence this filter misses at most {_pct(info.get('fnr_upper_95'))} "
               f"of {_e(name)} pairs: the bound rests on {_e(info.get('held_out_positives', 'n/a'))} held-out "
               f"positives that played no part in fitting the SVM.</p>")
    out.append(f"<img class='plot' src='{name}_scores.png' alt='score histograms of {_e(name)}'>")
    out.append(f"<img class='plot' src='{name}_roc.png' alt='ROC of {_e(name)}'>")
    for side, title, examples in (("removed", "Removed: the pairs just at or above the threshold",
                                   summary.removed_side[name]),
                                  ("kept", "Kept: the pairs just below the threshold", summary.kept_side[name])):
        out.append(f"<div class='side'>{_e(title)} ({len(examples)})</div><div class='examples'>")
        out += [_card(folder, f"{name}_{side}_{i:02d}.jpg", e, labels) for i, e in enumerate(examples)]
        out.append("</div>")
    return "".join(out)


def _card(folder: str, file_name: str, example: Example, labels: dict) -> str:
    if example.thumbnail:
        sh.write_bytes_atomic(sh.join(folder, "thumbs", file_name), example.thumbnail)
        image = f"<img src='thumbs/{file_name}' alt='pair {_e(example.uid)}'>"
    else:
        image = "<div class='noimg'>no image</div>"
    caption = example.caption if len(example.caption) <= CAPTION_CHARS else example.caption[:CAPTION_CHARS] + "…"
    label = labels.get(example.uid)
    labelled = "" if label is None else f"<div>labelled {'positive' if label else 'negative'}</div>"
    return (f"<div class='card'>{image}<div class='score'>score {example.score:.4f}</div>{labelled}"
            f"<div>{_e(caption)}</div><div class='uid'>{_e(example.uid)}</div></div>")
