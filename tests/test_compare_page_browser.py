"""The comparison page in a real headless Chromium (the OS's /usr/bin/chromium, driven by Playwright) against
`glide serve` run as a subprocess: a rater signs in, compares with clicks and keys, undoes one, sees a
markup caption as text and no setting name anywhere, and `glide elo fit --db ... --json` reflects the
votes; the admin's comparisons page lists the run and the rater.

Set GLIDE_SCREENSHOTS=DIR to keep the pages' screenshots there (docs/images holds compare-page.png).
"""
from __future__ import annotations

import json
import sqlite3

import pytest

from filtering.labels import LabelStore
from label_page_world import CHROMIUM_ARGS, Server, chromium_or_skip
from pairs_report_world import MARKUP_PROMPT, write_report
from test_label_page_browser import screenshot  # kept under GLIDE_SCREENSHOTS too

pytestmark = [pytest.mark.slow, pytest.mark.browser]
READY = "#work[data-pair]"
BETTER = "guidance-3"


def pair_row(db, pair_id):
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        return dict(raw.execute("SELECT * FROM comparison_pairs WHERE id = ?", (pair_id,)).fetchone())


def current(page) -> int:
    page.wait_for_selector(READY)
    return int(page.get_attribute("#work", "data-pair"))


def wait_past(page, pair_id):
    page.wait_for_function("id => { const w = document.querySelector('#work');"
                           " return (w.dataset.pair && w.dataset.pair !== String(id)) ||"
                           " !document.querySelector('#done').hidden; }", arg=pair_id)


def test_a_rater_compares_with_clicks_and_keys_undoes_one_and_the_elo_fit_reflects_it(tmp_path, glide):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    report = write_report(tmp_path / "report", prompts=8, settings=("guidance-1", "guidance-3"), markup_at=0)
    db = tmp_path / "labels.db"
    made = glide("pairs", "make", "--report", report, "--settings", f"guidance-1,{BETTER}", "--question", "caption",
                 "-n", 8, "--obvious", 0.25, "--duplicates", 0, "--votes-per-pair", 1, "--db", db)
    assert made.returncode == 0, made.stderr
    with LabelStore(str(db)) as store:
        token, admin = store.add_rater("kim"), store.add_rater("boss", admin=True)
    with Server(db) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/signin?next=/compare#token={token}")
        page.wait_for_url(f"{server.url}/compare")
        current(page)
        assert page.text_content("#question") == "Which image better matches the caption?"
        # how the rater answers: the side guidance-3 is on; "both bad" once (a tie for Elo); the sample
        # against noise on obvious pairs. Alternating clicks and the keys.
        ways = [("click", None), ("key", "ArrowRight"), ("key", "1"), ("key", "2"), ("click", None)]
        votes, step, undone_once, shot, tied = {}, 0, False, False, False
        while page.locator("#done").is_hidden():
            pair_id = current(page)
            row = pair_row(db, pair_id)
            html = page.content()
            assert "guidance" not in html and "noise" not in html and "samples/" not in html
            if row["prompt"] == MARKUP_PROMPT:       # a caption full of markup is text, and none of it ran
                assert page.text_content("#caption") == MARKUP_PROMPT
                assert page.locator("#caption *").count() == 0 and page.evaluate("window.pwned") is None
            else:
                assert page.text_content("#caption") == row["prompt"]
            if not shot and row["kind"] == "compare" and row["prompt"] != MARKUP_PROMPT:
                screenshot(page, tmp_path, "compare-page.png")
                shot = True
            b_side = "right" if row["a_side"] == "left" else "left"
            if row["kind"] == "obvious":
                choice = row["a_side"]
            elif step >= 2 and not tied:
                choice, tied = "both_bad", True
            else:
                choice = row["a_side"] if row["model_a"] == BETTER else b_side
            how, key = ways[step % len(ways)]
            if choice == "both_bad":
                page.keyboard.press("b")
            elif how == "click":
                page.click(f"#choose-{choice}")
            else:   # the way's key when it names this side, else the other key for the same side
                page.keyboard.press(key if {"ArrowRight": "right", "1": "left", "2": "right"}[key] == choice
                                    else {"left": "ArrowLeft", "right": "2"}[choice])
            wait_past(page, pair_id)
            votes[pair_id] = choice
            step += 1
            if step == 4 and not undone_once:       # undo the last vote: that pair comes back
                page.keyboard.press("u")
                page.wait_for_function("id => document.querySelector('#work').dataset.pair === String(id)",
                                       arg=pair_id)
                assert "Undid" in page.text_content("#status")
                tied = tied and votes.pop(pair_id) != "both_bad"
                undone_once = True
        assert errors == [] and len(votes) == 10        # 8 comparisons and 2 obvious pairs
        assert "Nothing left for you here" in page.text_content("#done")

        admin_page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        admin_page.goto(f"{server.url}/signin?next=/compare#token={admin}")
        admin_page.wait_for_url(f"{server.url}/compare")    # signed in: the post has landed
        admin_page.goto(f"{server.url}/compare/admin")
        admin_page.wait_for_selector("body[data-loaded='1']")
        assert "guidance-1, guidance-3" in admin_page.text_content("#runs")
        assert "kim" in admin_page.text_content(".rater-checks")
        screenshot(admin_page, tmp_path, "compare-admin.png")
        browser.close()

    with sqlite3.connect(db) as raw:
        stored = raw.execute("SELECT comparison_pair_id, winner, a_side, undone_at FROM judgements ORDER BY id").fetchall()
    assert len(stored) == 11 and sum(r[3] is not None for r in stored) == 1      # the undone vote stays, marked
    in_force = {pid: (winner, side) for pid, winner, side, undone in stored if undone is None}
    for pid, choice in votes.items():   # the side clicked became the right model's win
        winner, side = in_force[pid]
        assert winner == (choice if choice == "both_bad" else "a" if choice == side else "b")
    fitted = glide("elo", "fit", "--db", db, "--json", "--bootstrap", 100)
    assert fitted.returncode == 0, fitted.stderr
    models = json.loads(fitted.stdout.strip().splitlines()[-1])["models"]
    assert set(models) == {"guidance-1", BETTER}                   # the noise pairs are not comparisons
    assert models["guidance-1"]["comparisons"] == models[BETTER]["comparisons"] == 8
    assert models[BETTER]["elo"] > 0 > models["guidance-1"]["elo"]   # 7 wins and one "both bad" (a tie)
