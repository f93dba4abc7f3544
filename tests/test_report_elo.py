"""`glide report REPORT --judgements DB_OR_FILE`: the Elo table of the pairwise judgements of a report's
settings (bootstrap intervals, win rates, position bias, the raters left out) stored as REPORT/elo.json
and shown in index.html, read in headless Chromium; bad judgements input is one line, exit code 2."""
from __future__ import annotations

import json
import random
import re

import pytest

from evaluation import comparison_store as cs
from filtering.labels import LabelStore
from pairs_report_world import write_report

SETTINGS = ("guidance-1", "guidance-3", "guidance-5")
QUALITY = {"guidance-1": 0, "guidance-3": 1, "guidance-5": 2}   # what the attentive raters prefer
MARKUP = '<img src=x onerror="window.pwned=1"><b>photo</b>'


def write_evaluation_files(report, settings=SETTINGS) -> None:
    """settings.json, metrics.json and lineage.json as `glide evaluate` writes them (docs/evaluation.md,
    the report layout), with made-up metrics: what index.html needs beside the samples."""
    (report / "settings.json").write_text(json.dumps(
        {s: {"guidance": float(s.split("-")[1]), "clip_guidance": None, "model": "base", "upsampler": None}
         for s in settings}))
    metrics = {s: {"fid": 30.0 - 5 * k, "inception_score": None, "inception_score_std": None, "precision": 0.5,
                   "recall": 0.4, "clip_score": None, "samples": 24} for k, s in enumerate(settings)}
    (report / "metrics.json").write_text(json.dumps({"settings": metrics, "features": {
        "network": "scene-classifier", "features": "scene", "weights": "scene", "weights_sha256": None,
        "resize": "none"}}))
    (report / "lineage.json").write_text(json.dumps({
        "created": "2026-12-03T00:00:00+00:00", "samples_per_setting": 24, "command": "glide evaluate ...",
        "model": {"path": "base", "step": 1, "sha256": "0" * 64}, "upsampler": None, "clip": None,
        "prompts": {"path": "prompts.txt", "count": 12, "sha256": "1" * 64},
        "reference": {"folder": "ref", "count": 10, "listing_sha256": "2" * 64}, "sampler": {"steps": "8"}}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    write_report(folder, prompts=12, seeds=(7, 8), settings=SETTINGS)
    write_evaluation_files(folder)
    return folder


@pytest.fixture(scope="module")
def rated(report, tmp_path_factory):
    """A labels database with a photorealism run over the three settings, voted on the comparison
    store by four attentive raters (the better setting nine times in ten) and one who always says left."""
    db = tmp_path_factory.mktemp("db") / "labels.db"
    from pipeline.cli import main

    assert main(["pairs", "make", "--report", str(report), "--settings", ",".join(SETTINGS), "--question",
                 "photorealism", "-n", "30", "--db", str(db), "--duplicates", "0.25", "--obvious", "0.25",
                 "--votes-per-pair", "5"]) == 0
    rng = random.Random(1)

    def attentive(pair):
        if pair.model_b == "noise":
            return pair.a_side
        a_better = QUALITY[pair.model_a] > QUALITY[pair.model_b]
        pick_a = a_better == (rng.random() < 0.9)
        return pair.a_side if pick_a else ("right" if pair.a_side == "left" else "left")

    with LabelStore(str(db)) as store:
        for name in ("ana", "ben", "cai", "dee", "lefty"):
            store.add_rater(name)
            rater = next(r.id for r in store.raters() if r.name == name)
            choose = (lambda p: "left") if name == "lefty" else attentive
            while (pair := cs.next_pair(store, rater)) is not None:
                assert cs.vote(store, rater, cs.PageVote(f"{name}-{pair.id}", pair.id, choose(pair)))
    return db


def read_page(path):
    """(elo rows, win-rate rows, position-bias text, excluded-raters text, screenshot) of the page in Chromium."""
    from label_page_world import opened_in_chromium

    with opened_in_chromium(path) as page:
        cells = lambda selector: [row.locator("td, th").all_inner_texts()
                                  for row in page.locator(selector).all()]
        found = {"elo": cells("#elo tr")[1:], "rates": cells("#win-rates tr"),
                 "bias": page.locator("#position-bias").inner_text(),
                 "excluded": page.locator("#excluded-raters").all_inner_texts(),
                 "intro": page.locator("h2:has-text('Elo') + p").inner_text(),
                 "injected": page.evaluate("window.pwned === undefined ? 0 : 1")
                 + page.locator("#elo b, h2:has-text('Elo') + p img").count()}
        page.locator("h2:has-text('Elo')").scroll_into_view_if_needed()
        found["png"] = page.screenshot(full_page=False)
    return found


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_the_elo_of_a_labels_database_is_stored_and_shown_best_first_without_the_flagged_rater(report, rated,
                                                                                                 tmp_path, glide_cli,
                                                                                                 capsys):
    assert glide_cli("report", report, "--judgements", rated, "--question", "photorealism", "--exclude-flagged",
                     "--bootstrap", 200) == 0
    assert "left out, flagged by their checks: lefty" in capsys.readouterr().out
    stored = json.loads((report / "elo.json").read_text())
    assert list(stored["models"]) == ["guidance-5", "guidance-3", "guidance-1"]
    assert stored["excluded_raters"] == ["lefty"] and stored["question"] == "photorealism"
    # 30 comparisons, 10 of each of the 3 setting pairs, 4 raters left: each setting in 2 x 10 x 4 judgements
    assert all(m["comparisons"] == 80 for m in stored["models"].values())
    for m in stored["models"].values():
        assert m["ci_low"] < m["elo"] < m["ci_high"]
    assert stored["position_bias"]["decisive"] == 120   # the attentive raters never tie

    # a plain rebuild keeps the stored fit: the page is the same without --judgements
    page = (report / "index.html").read_text()
    assert glide_cli("report", report) == 0
    assert (report / "index.html").read_text() == page

    shown = read_page(report / "index.html")
    (tmp_path / "report-elo.png").write_bytes(shown["png"])
    assert [row[1] for row in shown["elo"]] == ["guidance-5", "guidance-3", "guidance-1"]
    assert [row[0] for row in shown["elo"]] == ["1", "2", "3"]
    best = stored["models"]["guidance-5"]
    assert shown["elo"][0][2:] == [f"{best['elo']:+.1f}", f"[{best['ci_low']:+.1f}, {best['ci_high']:+.1f}]", "80"]
    assert shown["rates"][0] == ["win rate of row vs column", "guidance-5", "guidance-3", "guidance-1"]
    assert shown["rates"][1][0] == "guidance-5" and shown["rates"][1][1] == "-"
    assert re.fullmatch(r"\d+\.\d% \(40\)", shown["rates"][1][3])           # 10 pairs x 4 raters
    assert float(shown["rates"][1][3].split("%")[0]) > 75                   # the best beats the worst
    assert "Position bias: the left image won" in shown["bias"]
    assert shown["excluded"] == ["Left out, flagged by their checks (glide pairs raters): lefty."]
    assert "photorealism" in shown["intro"] and "120 judgements" in shown["intro"]


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_a_judgements_csv_is_fitted_and_its_untrusted_text_shown_as_text(report, tmp_path, glide_cli):
    folder = tmp_path / "report"
    write_report(folder, prompts=4, settings=SETTINGS)
    write_evaluation_files(folder)
    rows = ["model_a,model_b,winner,question"]
    plan = [("guidance-3", "guidance-1", "a", 7), ("guidance-3", "guidance-1", "b", 3),
            ("guidance-5", "guidance-3", "a", 6), ("guidance-5", "guidance-3", "tie", 2),
            ("guidance-3", "guidance-5", "a", 2), ("guidance-1", "guidance-5", "a", 1),
            ("guidance-5", "guidance-1", "a", 8)]
    for a, b, winner, times in plan:
        rows += [f'{a},{b},{winner},"{MARKUP.replace(chr(34), chr(34) * 2)}"'] * times
    (tmp_path / "votes.csv").write_text("\n".join(rows) + "\n")
    assert glide_cli("report", folder, "--judgements", tmp_path / "votes.csv", "--bootstrap", 100) == 0
    stored = json.loads((folder / "elo.json").read_text())
    assert list(stored["models"]) == ["guidance-5", "guidance-3", "guidance-1"]
    assert stored["position_bias"] is None and stored["excluded_raters"] is None
    shown = read_page(folder / "index.html")
    assert [row[1] for row in shown["elo"]] == ["guidance-5", "guidance-3", "guidance-1"]
    assert "29 judgements" in shown["intro"] and MARKUP in shown["intro"] and shown["injected"] == 0
    assert "do not say which side" in shown["bias"] and shown["excluded"] == []


@pytest.mark.parametrize("make, extra, message", [
    (lambda d: d / "no-such.db", [], r"no-such\.db: no labels database there"),
    (lambda d: (d / "v.csv").write_text("model_a,model_b\nguidance-1,guidance-3\n") and d / "v.csv", [],
     r"v\.csv: no column 'winner'"),
    (lambda d: (d / "v.csv").write_text("model_a,model_b,winner\nguidance-1,guidance-9,a\nguidance-9,guidance-1,a\n")
     and d / "v.csv", [], r"v\.csv: judges 'guidance-9', which is no setting of this report"),
    (lambda d: (d / "v.csv").write_text("model_a,model_b,winner\nguidance-1,guidance-3,a\nguidance-3,guidance-1,a\n")
     and d / "v.csv", ["--exclude-flagged"], r"v\.csv: --exclude-flagged needs the labels database"),
    (lambda d: None, ["--question", "photorealism"], r"--question: only with --judgements"),
])
def test_bad_judgements_input_is_one_line_with_exit_code_2(report, tmp_path, make, extra, message, glide_cli,
                                                            capsys):
    source = make(tmp_path)
    argv = ["--judgements", source] if source is not None else []
    stored = (report / "elo.json").read_bytes() if (report / "elo.json").exists() else None
    capsys.readouterr()
    assert glide_cli("report", report, *argv, *extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert ((report / "elo.json").read_bytes() if (report / "elo.json").exists() else None) == stored  # untouched
