"""Elo from pairwise judgements (GLIDE Appendix A.1): the fit, its errors, bootstrap, files, database, CLI."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from evaluation.elo import (A_WINS, B_WINS, BETA, TIE, check_finite_maximum, fit_elo, fit_elo_scores,
                            fit_elo_scores_batched, win_matrix)
from evaluation.judgements import Judgements, read_judgements_db, read_judgements_file, select_judgements
from shards import UserError


def simulate(true: dict, n: int, seed: int = 0, tie_rate: float = 0.1) -> pa.Table:
    """n judgements among the models of `true` (name -> Elo): random pairs, outcomes drawn from the
    Elo expectation, a share of ties."""
    rng = np.random.default_rng(seed)
    names = sorted(true)
    s = np.array([true[k] for k in names])
    i = rng.integers(0, len(names), n)
    j = (i + rng.integers(1, len(names), n)) % len(names)
    p = 1 / (1 + 10 ** ((s[j] - s[i]) / 400))
    u = rng.random(n)
    winner = np.where(u < tie_rate, "tie", np.where(rng.random(n) < p, "a", "b"))
    return pa.table({"model_a": np.array(names)[i], "model_b": np.array(names)[j], "winner": winner})


def independent_mle(wins: np.ndarray) -> np.ndarray:
    """The same objective, minimised by scipy (BFGS) from the raw formula, centred at mean 0."""
    from scipy.optimize import minimize

    def loss(s):
        return -(wins * np.log(1 / (1 + 10 ** ((s[None, :] - s[:, None]) / 400)))).sum()

    def grad(s):
        p = 1 / (1 + 10 ** ((s[None, :] - s[:, None]) / 400))
        r = wins * (1 - p)  # d/ds_i of A_ij log p_ij = BETA A_ij (1 - p_ij); d/ds_j = -that
        return -BETA * (r.sum(axis=1) - r.sum(axis=0))

    s = minimize(loss, np.zeros(wins.shape[0]), jac=grad, method="BFGS", options={"gtol": 1e-10}).x
    return s - s.mean()


def test_two_models_have_the_closed_form_and_a_tie_is_half_a_win_each():
    # 30 wins of m0, 10 of m1, 4 ties: A_01 = 32, A_10 = 12 -> s0 - s1 = 400 log10(32 / 12)
    a = np.array([0] * 44)
    b = np.array([1] * 44)
    outcome = np.array([A_WINS] * 30 + [B_WINS] * 10 + [TIE] * 4)
    wins = win_matrix(a, b, outcome, 2)
    assert wins.tolist() == [[0, 32], [12, 0]]
    s = fit_elo_scores(wins)
    assert s.sum() == pytest.approx(0, abs=1e-9)
    assert s[0] - s[1] == pytest.approx(400 * np.log10(32 / 12), abs=1e-7)


def test_the_fit_equals_an_independent_maximum_likelihood_fit_and_recovers_the_truth():
    true = {"g1": -150.0, "g2": 0.0, "g3": 60.0, "g4": 200.0, "dalle": -80.0}
    judgements = Judgements.from_table(simulate(true, 20_000, seed=3, tie_rate=0.0), "sim")
    result = fit_elo(judgements, bootstrap=300, seed=1)
    wins = result.wins
    assert np.allclose(result.elo, independent_mle(wins), atol=1e-3)
    truth = np.array([true[m] for m in result.models])
    truth -= truth.mean()
    assert np.abs(result.elo - truth).max() < 25
    assert np.all(result.ci_low <= result.elo) and np.all(result.elo <= result.ci_high)
    covered = (result.ci_low <= truth) & (truth <= result.ci_high)
    assert covered.sum() >= 4
    assert result.comparisons.sum() == 2 * len(judgements)
    assert result.bootstrap_failed == 0
    again = fit_elo(judgements, bootstrap=300, seed=1)
    assert np.array_equal(again.ci_low, result.ci_low)  # seeded
    rates = result.win_rates()
    off = ~np.eye(len(result.models), dtype=bool)
    assert np.allclose((rates + rates.T)[off], 1.0) and np.isnan(rates[~off]).all()  # shares add up
    order = [result.models[i] for i in result.order()]
    assert order == ["g4", "g3", "g2", "dalle", "g1"]


def test_fewer_judgements_give_wider_intervals():
    true = {"a": 0.0, "b": 100.0, "c": 200.0}
    wide = fit_elo(Judgements.from_table(simulate(true, 300, seed=5), "few"), bootstrap=400, seed=0)
    narrow = fit_elo(Judgements.from_table(simulate(true, 30_000, seed=5), "many"), bootstrap=400, seed=0)
    assert np.all(wide.ci_high - wide.ci_low > 3 * (narrow.ci_high - narrow.ci_low))


def test_batched_bootstrap_fits_equal_single_fits():
    rng = np.random.default_rng(0)
    wins = rng.integers(1, 30, size=(6, 4, 4)).astype(float)
    for k in range(6):
        np.fill_diagonal(wins[k], 0)
    wins[5, 0, :] = 0  # model 0 never wins here: no finite maximum
    start = fit_elo_scores(wins[0])
    scores, ok = fit_elo_scores_batched(wins, start)
    assert ok.tolist() == [True] * 5 + [False]
    for k in range(5):
        assert np.allclose(scores[k], fit_elo_scores(wins[k]), atol=1e-6)


@pytest.mark.parametrize("rows,expected", [
    ([("x", "y", "a"), ("x", "z", "a"), ("y", "z", "tie")], "model 'x' won every comparison it was in"),
    ([("x", "y", "b"), ("z", "x", "a"), ("y", "z", "tie")], "model 'x' lost every comparison it was in"),
    ([("x", "y", "a"), ("y", "x", "a"), ("z", "w", "a"), ("w", "z", "tie")],
     "the comparison graph is disconnected: no judgement links the groups {w, z}; {x, y}"),
    ([("x", "y", "a"), ("y", "x", "a"), ("x", "z", "a"), ("y", "w", "a"), ("z", "w", "tie")],
     "models {x, y} won every comparison against the other models"),
])
def test_no_finite_maximum_is_a_clear_error_naming_the_models(rows, expected):
    table = pa.table({k: [r[n] for r in rows] for n, k in enumerate(("model_a", "model_b", "winner"))})
    with pytest.raises(UserError, match="^votes.csv: " + expected.replace("{", r"\{").replace("}", r"\}")):
        fit_elo(Judgements.from_table(table, "votes.csv"), where="votes.csv")


def test_a_single_model_is_an_error():
    with pytest.raises(UserError, match="at least 2 models"):
        check_finite_maximum(np.zeros((1, 1)), ["solo"], "j.csv")


@pytest.mark.parametrize("table,expected", [
    ({"model_a": ["x"], "winner": ["a"]}, "j.csv: no column 'model_b'"),
    ({"model_a": ["x", "x"], "model_b": ["y", "y"], "winner": ["a", "left"]}, "j.csv: row 2: column 'winner': 'left' not a, b or tie"),
    ({"model_a": ["x", "y"], "model_b": ["y", "y"], "winner": ["a", "b"]}, "j.csv: row 2: column 'model_b': 'y' the same model as model_a"),
    ({"model_a": ["x", ""], "model_b": ["y", "z"], "winner": ["a", "b"]}, "j.csv: row 2: column 'model_a': empty model name"),
    ({"model_a": ["x", None], "model_b": ["y", "z"], "winner": ["a", "b"]}, "j.csv: row 2: column 'model_a': empty"),
    ({"model_a": [1], "model_b": [2], "winner": ["a"]}, "j.csv: column 'model_a' holds int64, not text"),
    ({"model_a": pa.array([], pa.string()), "model_b": pa.array([], pa.string()), "winner": pa.array([], pa.string())},
     "j.csv: no judgements"),
])
def test_bad_judgements_name_the_row_and_column(table, expected):
    with pytest.raises(UserError, match="^" + expected):
        Judgements.from_table(pa.table(table), "j.csv")


def test_questions_and_raters_are_selected():
    table = pa.table({"model_a": ["x", "x", "y"], "model_b": ["y", "y", "x"], "winner": ["a", "B ", "both_bad"],
                      "question": ["caption", "photorealism", "caption"], "rater": ["ana", "bo", "bo"]})
    with pytest.raises(UserError, match="holds judgements for 2 questions .caption, photorealism.; .* --question"):
        select_judgements(table, "j.csv")
    with pytest.raises(UserError, match="--question style: no judgements for it"):
        select_judgements(table, "j.csv", question="style")
    with pytest.raises(UserError, match="--exclude-raters: no judgements by 'cy'"):
        select_judgements(table, "j.csv", question="caption", exclude_raters=["cy"])
    caption = Judgements.from_table(select_judgements(table, "j.csv", question="caption"), "j.csv")
    assert caption.models == ["x", "y"] and caption.outcome.tolist() == [A_WINS, TIE]
    only_ana = select_judgements(table, "j.csv", question="caption", exclude_raters=["bo"])
    assert only_ana.num_rows == 1
    photo = Judgements.from_table(select_judgements(table, "j.csv", question="photorealism"), "j.csv")
    assert photo.outcome.tolist() == [B_WINS]  # "B " read as b


def test_judgements_files_read_as_csv_arrow_and_parquet(tmp_path):
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    table = simulate({"a": 0, "b": 50}, 50, seed=2)
    (tmp_path / "j.csv").write_text("model_a,model_b,winner,prompt\n" + "".join(
        f"{a},{b},{w},\"a red, round thing\"\n" for a, b, w in zip(*(table.column(c).to_pylist() for c in
                                                                     ("model_a", "model_b", "winner")))))
    with ipc.new_file(str(tmp_path / "j.arrow"), table.schema) as w:
        w.write_table(table)
    with ipc.new_stream(str(tmp_path / "s.arrow"), table.schema) as w:
        w.write_table(table)
    pq.write_table(table, tmp_path / "j.parquet")
    for name in ("j.csv", "j.arrow", "s.arrow", "j.parquet"):
        read = read_judgements_file(str(tmp_path / name))
        assert read.select(["model_a", "model_b", "winner"]).equals(table), name
    with pytest.raises(UserError, match="nope.csv: judgements file not found"):
        read_judgements_file(str(tmp_path / "nope.csv"))
    with pytest.raises(UserError, match="j.txt: judgements files are"):
        read_judgements_file(str(tmp_path / "j.txt"))
    (tmp_path / "bad.arrow").write_bytes(b"not arrow")
    with pytest.raises(UserError, match="bad.arrow: not a readable arrow judgements file"):
        read_judgements_file(str(tmp_path / "bad.arrow"))


def write_judgements_db(path, rows):
    """The comparison page's writes, as rows of the labels database's judgements table."""
    import sqlalchemy as sa

    from filtering.labels import LabelStore
    from filtering.labels.schema import judgements, raters

    now = dt.datetime(2025, 2, 10, tzinfo=dt.timezone.utc)
    with LabelStore(str(path)) as store, store.write() as conn:
        ids = {}
        for name in sorted({r["rater"] for r in rows}):
            ids[name] = conn.execute(sa.insert(raters).values(name=name, created=now)).inserted_primary_key[0]
        for k, r in enumerate(rows):
            conn.execute(sa.insert(judgements).values(
                client_id=f"vote-{k}", question=r.get("question", "photorealism"), pair_id=r.get("pair"),
                model_a=r["a"], model_b=r["b"], winner=r["winner"], a_side="left", prompt="a red circle",
                seed=1, rater_id=ids[r["rater"]], source="page", created=now, stored=now,
                undone_at=now if r.get("undone") else None))


def test_the_database_judgements_leave_out_undone_and_superseded_votes(tmp_path):
    db = tmp_path / "labels.db"
    write_judgements_db(db, [
        {"a": "g1", "b": "g3", "winner": "a", "rater": "ana", "pair": "p1", "undone": True},
        {"a": "g1", "b": "g3", "winner": "b", "rater": "ana", "pair": "p1"},            # ana changed her vote
        {"a": "g1", "b": "g3", "winner": "tie", "rater": "bo", "pair": "p1", "undone": True},
        {"a": "g3", "b": "g1", "winner": "both_bad", "rater": "bo", "pair": "p2"},
        {"a": "g3", "b": "g1", "winner": "a", "rater": "bo", "pair": "p2", "question": "caption"},
    ])
    table = read_judgements_db(str(db))
    assert table.column("winner").to_pylist() == ["b", "both_bad", "a"]
    assert table.column("rater").to_pylist() == ["ana", "bo", "bo"]
    photo = Judgements.from_table(select_judgements(table, "db", question="photorealism"), "db")
    assert photo.models == ["g1", "g3"] and photo.outcome.tolist() == [B_WINS, TIE]
    with pytest.raises(UserError, match="no labels database there"):
        read_judgements_db(str(tmp_path / "missing.db"))


def test_glide_elo_fit_prints_the_table_and_ends_with_json(tmp_path, glide_cli, capsys):
    table = simulate({"guidance-1": 0.0, "guidance-3": 120.0, "clip-guidance": 40.0}, 3000, seed=4)
    path = tmp_path / "judgements.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, path)
    assert glide_cli("elo", "fit", path, "--json", "--bootstrap", 200) == 0
    out = capsys.readouterr().out
    assert "Elo from 3,000 judgements of 3 models" in out and "win rate (row vs column)" in out
    last = json.loads(out.strip().splitlines()[-1])
    assert list(last) == ["models"] and list(last["models"]) == ["guidance-3", "clip-guidance", "guidance-1"]
    top = last["models"]["guidance-3"]
    assert set(top) == {"elo", "ci_low", "ci_high", "comparisons"} and top["ci_low"] <= top["elo"] <= top["ci_high"]
    assert sum(m["comparisons"] for m in last["models"].values()) == 6000
    assert abs(sum(m["elo"] for m in last["models"].values())) < 0.1

    db = tmp_path / "labels.db"
    write_judgements_db(db, [{"a": "x", "b": "y", "winner": "a", "rater": "ana"},
                             {"a": "x", "b": "y", "winner": "b", "rater": "bo"},
                             {"a": "y", "b": "x", "winner": "tie", "rater": "bo"}])
    assert glide_cli("elo", "fit", "--db", db, "--json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]["x"]["elo"] == 0.0


@pytest.mark.parametrize("content,expected", [
    ("model_a,model_b,winner\nx,y,a\nx,y,a\n", "j.csv: model 'x' won every comparison it was in"),
    ("model_a,model_b\nx,y\n", "j.csv: no column 'winner'"),
    ("model_a,model_b,winner\nx,y,maybe\n", "j.csv: row 1: column 'winner': 'maybe' not a, b or tie"),
])
def test_glide_elo_fit_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, glide_cli, capsys, content, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "j.csv").write_text(content)
    assert glide_cli("elo", "fit", "j.csv") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glide: error: " + expected) and len(err.splitlines()) == 1
