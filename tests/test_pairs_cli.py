"""`glide pairs make / list / raters` and what `glide elo fit` does with the comparison page's votes: tasks
from a report folder built to the glide evaluate contract, bad input as one line with exit code 2, and a
rater who answers by position listed by the checks and left out of the fit."""
from __future__ import annotations

import json
import random
import sqlite3

import pytest

from evaluation import comparison_store as cs
from evaluation.pairs import DUPLICATE_GAP
from filtering.labels import LabelStore
from pairs_report_world import write_report

SETTINGS = "guidance-1,guidance-3,guidance-5"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(tmp_path_factory.mktemp("report"), prompts=20, seeds=(7, 8))


def pairs(db):
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        return [dict(r) for r in raw.execute("SELECT * FROM comparison_pairs ORDER BY position")]


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_pairs_make_stores_same_prompt_and_seed_comparisons_with_random_sides_and_checks(report, tmp_path,
                                                                                           glide_cli, capsys):
    db = tmp_path / "labels.db"
    assert glide_cli("pairs", "make", "--report", report, "--settings", SETTINGS, "--question", "photorealism",
                     "-n", 60, "--db", db, "--duplicates", 0.1, "--obvious", 0.1, "--seed", 3, "--cap", 50,
                     "--json") == 0
    out = capsys.readouterr().out
    assert last_json(out) == {"run": 1, "question": "photorealism", "settings": SETTINGS.split(","),
                              "compare": 60, "duplicate": 6, "obvious": 6}
    rows = pairs(db)
    assert [r["position"] for r in rows] == list(range(72))
    compares = [r for r in rows if r["kind"] == "compare"]
    for r in compares:   # two settings' samples of the same prompt and seed
        assert r["model_a"] != r["model_b"] and {r["model_a"], r["model_b"]} <= set(SETTINGS.split(","))
        assert r["image_a"] == f"samples/{r['model_a']}/{r['prompt_index']:04d}-{r['seed']}.png"
        assert r["image_b"] == f"samples/{r['model_b']}/{r['prompt_index']:04d}-{r['seed']}.png"
    keys = [(frozenset((r["model_a"], r["model_b"])), r["prompt_index"], r["seed"]) for r in compares]
    assert len(set(keys)) == 60                                       # no comparison twice
    assert {k[0] for k in keys} == {frozenset(p) for p in (("guidance-1", "guidance-3"), ("guidance-1", "guidance-5"),
                                                           ("guidance-3", "guidance-5"))}
    left = sum(r["a_side"] == "left" for r in compares)
    assert 15 < left < 45                                             # random sides (binomial 60, 1/2)
    by_id = {r["id"]: r for r in rows}
    for d in (r for r in rows if r["kind"] == "duplicate"):          # later, same images, sides swapped
        original = by_id[d["duplicate_of"]]
        assert original["kind"] == "compare" and d["position"] > original["position"] + DUPLICATE_GAP
        assert (d["model_a"], d["model_b"], d["image_a"], d["image_b"], d["prompt"], d["seed"]) == (
            original["model_a"], original["model_b"], original["image_a"], original["image_b"], original["prompt"],
            original["seed"])
        assert d["a_side"] != original["a_side"]
    obvious = [r for r in rows if r["kind"] == "obvious"]
    assert all(r["model_b"] == "noise" and r["image_b"] is None and r["noise_seed"] is not None for r in obvious)
    with sqlite3.connect(db) as raw:
        run = raw.execute("SELECT question, settings, votes_per_pair, cap_per_rater FROM comparison_runs").fetchone()
    assert run[0] == "photorealism" and json.loads(run[1]) == SETTINGS.split(",") and run[2:4] == (3, 50)
    assert glide_cli("pairs", "list", "--db", db, "--json") == 0
    listed = last_json(capsys.readouterr().out)["runs"]
    assert [(r["id"], r["comparisons"], r["checks"], r["votes"], r["votes_wanted"]) for r in listed] == [(1, 60, 12, 0, 180)]


def test_the_same_seed_makes_the_same_pairs(report, tmp_path, glide_cli, capsys):
    made = []
    for name in ("one.db", "two.db"):
        assert glide_cli("pairs", "make", "--report", report, "--settings", "guidance-1,guidance-3",
                         "--question", "caption", "-n", 10, "--db", tmp_path / name, "--seed", 5) == 0
        made.append([{k: v for k, v in r.items() if k != "id"} for r in pairs(tmp_path / name)])
    assert made[0] == made[1]


@pytest.mark.parametrize("change, message", [
    (["--settings", "guidance-1,guidance-9"], "--settings: 'guidance-9' is not a setting of"),
    (["--settings", "guidance-1"], "give two or more different settings"),
    (["-n", 100], "-n 100: "),
    (["--question", "beauty"], "--question 'beauty': one of photorealism, caption"),
    (["--obvious", 1.5], "--obvious 1.5: a fraction between 0 and 1"),
    (["--report", "/nonexistent/report"], "--report /nonexistent/report: not a folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(report, tmp_path, change, message, glide_cli, capsys):
    args = {"--report": report, "--settings": "guidance-1,guidance-3", "--question": "photorealism", "-n": 5,
            "--db": tmp_path / "labels.db"}
    args.update(dict(zip(change[::2], change[1::2])))
    argv = [str(x) for kv in args.items() for x in kv]
    assert glide_cli("pairs", "make", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) <= 3


def test_a_report_index_off_the_contract_is_named(tmp_path, glide_cli, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    report = write_report(tmp_path / "report", prompts=3, settings=("guidance-1", "guidance-3"))
    index = tmp_path / "report" / "samples" / "index.parquet"
    table = pq.read_table(index)
    pq.write_table(table.drop(["seed"]), index)
    assert glide_cli("pairs", "make", "--report", report, "--settings", "guidance-1,guidance-3", "--question",
                     "caption", "-n", 2, "--db", tmp_path / "l.db") == 2
    assert f"{index}: no column 'seed'" in capsys.readouterr().err
    escaping = table.set_column(4, "path", pa.array(["../../outside.png"] * table.num_rows))
    pq.write_table(escaping, index)
    assert glide_cli("pairs", "make", "--report", report, "--settings", "guidance-1,guidance-3", "--question",
                     "caption", "-n", 2, "--db", tmp_path / "l.db") == 2
    assert "leads outside the report folder" in capsys.readouterr().err


def answer_all(store, rater_id, choose):
    """Rater `rater_id` votes until nothing is left for them: choose(pair) -> left/right/tie/both_bad."""
    votes = 0
    while (pair := cs.next_pair(store, rater_id)) is not None:
        assert cs.vote(store, rater_id, cs.PageVote(f"r{rater_id}-{pair.id}", pair.id, choose(pair)))
        votes += 1
    return votes


def test_a_rater_who_answers_by_position_is_listed_and_left_out_of_the_elo_fit(report, tmp_path, glide_cli, capsys):
    db = tmp_path / "labels.db"
    assert glide_cli("pairs", "make", "--report", report, "--settings", "guidance-1,guidance-3", "--question",
                     "photorealism", "-n", 40, "--db", db, "--duplicates", 0.25, "--obvious", 0.25,
                     "--votes-per-pair", 6) == 0
    rng = random.Random(0)

    def attentive(pair):   # sees the noise; prefers guidance-3 nine times in ten, whichever side it is on
        if pair.model_b == "noise":
            return pair.a_side
        better_is_a = (pair.model_a == "guidance-3") == (rng.random() < 0.9)
        side_b = "right" if pair.a_side == "left" else "left"
        return pair.a_side if better_is_a else side_b

    with LabelStore(str(db)) as store:
        ids = {}
        for name in ("ana", "ben", "cai", "dee", "eve", "lefty"):
            store.add_rater(name)
            ids[name] = next(r.id for r in store.raters() if r.name == name)
        counts = {name: answer_all(store, ids[name], (lambda p: "left") if name == "lefty" else attentive)
                  for name in ids}
    assert all(count >= 40 for count in counts.values())
    capsys.readouterr()
    assert glide_cli("pairs", "raters", "--db", db, "--json") == 0
    out = capsys.readouterr().out
    checks = {c["rater"]: c for c in last_json(out)["photorealism"]}
    assert "flagged: lefty" in out
    assert [name for name, c in checks.items() if c["flagged"]] == ["lefty"]
    lefty = checks["lefty"]
    assert lefty["obvious"] == 10 and 2 <= lefty["obvious_missed"] <= 8 and "obvious" in lefty["flagged"]
    assert lefty["duplicates"] == 10 and lefty["inconsistent"] == 10 and "duplicates" in lefty["flagged"]
    assert checks["ana"]["obvious_missed"] == 0 and checks["ana"]["majority_agreed"] > 0.7 * checks["ana"]["majority_votes"]

    assert glide_cli("elo", "fit", "--db", db, "--question", "photorealism", "--bootstrap", 100, "--json") == 0
    everyone = last_json(capsys.readouterr().out)
    assert glide_cli("elo", "fit", "--db", db, "--question", "photorealism", "--bootstrap", 100,
                     "--exclude-flagged", "--json") == 0
    out = capsys.readouterr().out
    fitted = last_json(out)
    assert "left out, flagged by their checks (glide pairs raters): lefty" in out
    assert fitted["excluded_raters"] == ["lefty"]
    # the check items are not comparisons: 40 comparisons x 6 raters, then without lefty's 40
    assert everyone["models"]["guidance-3"]["comparisons"] == 240
    assert fitted["models"]["guidance-3"]["comparisons"] == 200
    assert set(fitted["models"]) == {"guidance-1", "guidance-3"}
    assert fitted["models"]["guidance-3"]["elo"] > everyone["models"]["guidance-3"]["elo"] > 0
    bias = fitted["position_bias"]
    assert bias["decisive"] == 200 and 0.35 < bias["left_share"] < 0.65
    assert everyone["position_bias"]["left_wins"] - bias["left_wins"] == 40   # lefty's 40 all went left
    assert "position bias: the left image won" in out


def test_exclude_flagged_needs_the_database(tmp_path, glide_cli, capsys):
    path = tmp_path / "votes.csv"
    path.write_text("model_a,model_b,winner\nx,y,a\ny,x,a\n")
    assert glide_cli("elo", "fit", path, "--exclude-flagged") == 2
    assert "--exclude-flagged: needs --db" in capsys.readouterr().err
