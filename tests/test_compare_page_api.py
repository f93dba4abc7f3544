"""The comparison page's HTTP API in-process (Starlette's test client, a real SQLite file, a report folder
built to the glide evaluate contract): pairs handed out without model identity, votes stored once with
the sides, undo, the per-rater cap, and forged or hostile posts refused with nothing stored."""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from evaluation import comparison_store as cs
from evaluation.pairs import plan_pairs, read_report_samples
from filtering.labels import LabelStore
from pairs_report_world import MARKUP_PROMPT, write_report
from pipeline.webapp.app import create_app
from pipeline.webapp.context import AppContext, ServeSettings
from test_label_page_api import sign_in  # the labelling page's sign-in, the same for this page

SETTINGS = ["guidance-1", "guidance-3"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report(tmp_path_factory.mktemp("report"), prompts=12, markup_at=0)


def make_run(db, report, *, n=8, cap=None, votes_per_pair=2, duplicates=0.0, obvious=0.0, seed=0):
    tasks = plan_pairs(read_report_samples(report), SETTINGS, n, seed=seed, duplicate_fraction=duplicates,
                       obvious_fraction=obvious)
    with LabelStore(str(db)) as store:
        return cs.create_run(store, question="photorealism", report=report, settings=SETTINGS, tasks=tasks,
                             votes_per_pair=votes_per_pair, cap_per_rater=cap)


@pytest.fixture
def served(report, tmp_path):
    db = tmp_path / "labels.db"
    with LabelStore(str(db)) as store:
        tokens = {name: store.add_rater(name) for name in ("ana", "ben")}
        tokens["boss"] = store.add_rater("boss", admin=True)
    context = AppContext.open(ServeSettings(db=str(db), gold_every=0))
    yield create_app(context=context), db, tokens
    context.store.close()


def vote(client, pair, choice="left", client_id=None, **extra):
    return client.post("/api/compare/votes", json={"client_id": client_id or f"v{pair['id']:08d}{choice}",
                                                   "pair_id": pair["id"], "choice": choice, **extra})


def stored(db):
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT j.pair_id, j.model_a, j.model_b, j.winner, j.a_side, j.question, j.prompt, "
                           "j.seed, r.name, j.undone_at, j.check_kind FROM judgements j JOIN raters r "
                           "ON r.id = j.rater_id ORDER BY j.id").fetchall()


def pair_row(db, pair_id):
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        return dict(raw.execute("SELECT * FROM comparison_pairs WHERE id = ?", (pair_id,)).fetchone())


def test_a_rater_gets_both_images_of_one_prompt_and_seed_without_the_settings(served, report):
    app, db, tokens = served
    run = make_run(db, report, n=6, obvious=0.5)
    ana = sign_in(app, tokens["ana"])
    reply = ana.get(f"/api/compare/next?run={run.id}")
    first = reply.json()["next"]
    assert set(first) == {"id", "run", "question", "question_text", "caption", "left", "right"}
    assert first["question_text"] == "Which image is more photorealistic?"
    seen_kinds = set()
    for _ in range(9):   # 6 comparisons + 3 obvious pairs
        pair = ana.get(f"/api/compare/next?run={run.id}").json()["next"]
        text = json.dumps(pair)
        assert not any(s in text for s in SETTINGS + ["guidance", "noise", "samples/", ".png"]), text
        row = pair_row(db, pair["id"])
        seen_kinds.add(row["kind"])
        images = {side: ana.get(pair[side]) for side in ("left", "right")}
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in images.values())
        a_bytes = images[row["a_side"]].content
        b_bytes = images["right" if row["a_side"] == "left" else "left"].content
        assert a_bytes == Path(report, row["image_a"]).read_bytes()
        if row["kind"] == "compare":   # the other setting's sample of the same prompt and seed
            assert row["image_b"].split("/")[-1] == row["image_a"].split("/")[-1]
            assert b_bytes == Path(report, row["image_b"]).read_bytes()
        else:                          # an obvious pair: noise the size of the sample
            from PIL import Image

            noise = Image.open(io.BytesIO(b_bytes))
            assert noise.size == (48, 48) and len(set(noise.getdata())) > 1000
        assert vote(ana, pair, "left").json()["stored"] is True
    assert seen_kinds == {"compare", "obvious"}
    assert ana.get(f"/api/compare/next?run={run.id}").json()["next"] is None


def test_votes_store_the_models_sides_and_winner_once_and_undo_gives_the_pair_back(served, report):
    app, db, tokens = served
    run = make_run(db, report, n=4)
    ana = sign_in(app, tokens["ana"])
    pair = ana.get("/api/compare/next").json()["next"]
    row = pair_row(db, pair["id"])
    reply = vote(ana, pair, "left", client_id="press-0000000001")
    assert reply.status_code == 200 and reply.json()["stored"] is True
    again = vote(ana, pair, "left", client_id="press-0000000001")          # a lost reply: the page resends
    assert again.status_code == 200 and again.json()["stored"] is False
    assert again.json()["next"]["id"] == reply.json()["next"]["id"]
    winner = "a" if row["a_side"] == "left" else "b"
    assert stored(db) == [(str(pair["id"]), row["model_a"], row["model_b"], winner, row["a_side"], "photorealism",
                           row["prompt"], row["seed"], "ana", None, None)]
    second = reply.json()["next"]
    assert vote(ana, second, "both_bad", client_id="press-0000000002").json()["stored"] is True
    undone = ana.post("/api/compare/undo", json={"client_id": "undo-00000001", "run": run.id}).json()
    assert undone["undone"] == {"pair_id": second["id"], "choice": "both_bad"}
    assert undone["next"]["id"] == second["id"]                             # the undone pair comes back
    resent = ana.post("/api/compare/undo", json={"client_id": "undo-00000001", "run": run.id}).json()
    assert resent["undone"] == undone["undone"] and len([r for r in stored(db) if r[9] is None]) == 1
    assert vote(ana, second, "right", client_id="press-0000000003").json()["stored"] is True
    rows = stored(db)
    assert [(r[0], r[3], r[9] is None) for r in rows][1:] == [
        (str(second["id"]), "both_bad", False),
        (str(second["id"]), "a" if pair_row(db, second["id"])["a_side"] == "right" else "b", True)]
    progress = ana.get("/api/compare/progress").json()["runs"]
    assert progress == [{"id": run.id, "question": "photorealism", "question_text": "Which image is more photorealistic?",
                         "comparisons": 4, "votes": 2, "votes_wanted": 8, "mine": 2, "cap": None}]


def test_forged_posts_are_refused_cleanly_and_store_nothing(served, report):
    app, db, tokens = served
    make_run(db, report, n=4, votes_per_pair=1)
    ana, ben = sign_in(app, tokens["ana"]), sign_in(app, tokens["ben"])
    bens = ben.get("/api/compare/next").json()["next"]
    anas = ana.get("/api/compare/next").json()["next"]
    assert anas["id"] != bens["id"]                       # one vote wanted: ben holds his pair
    # someone else's pair: handed to ben, not to ana
    forged = vote(ana, bens, "left", client_id="forged-00000001")
    assert forged.status_code == 403 and "not handed to you" in forged.json()["detail"]
    assert ana.get(bens["left"]).status_code == 404       # nor its images
    assert vote(ana, anas, "left", client_id="first-00000001").status_code == 200
    twice = vote(ana, anas, "right", client_id="second-0000001")     # a second vote under a new id
    assert twice.status_code == 409 and "already" in twice.json()["detail"]
    reused = vote(ben, bens, "left", client_id="first-00000001")     # another vote's client id
    assert reused.status_code == 409
    unknown = vote(ana, {"id": 999_999}, "left", client_id="unknown-0000001")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no comparison pair 999999"
    for bad in ({"choice": "a"}, {"pair_id": -1}, {"pair_id": "1; DROP TABLE judgements"}, {"model": "x"},
                {"client_id": "<script>"}):
        body = {"client_id": "bad-000000001", "pair_id": anas["id"], "choice": "left", **bad}
        assert ana.post("/api/compare/votes", json=body).status_code == 422
    no_csrf = TestClient(app, cookies=ana.cookies).post("/api/compare/votes", json={
        "client_id": "nocsrf-0000001", "pair_id": bens["id"], "choice": "left"})
    assert no_csrf.status_code == 403
    assert TestClient(app).get("/api/compare/next").status_code == 401
    assert ana.get("/compare/image/999999/left").status_code == 404
    assert ana.get(f"/compare/image/{anas['id']}/middle").status_code == 422
    assert ana.get("/compare/image/..%2F..%2Fetc%2Fpasswd/left").status_code in (404, 422)
    assert ana.get("/api/admin/compare").status_code == 403
    assert [(r[0], r[8]) for r in stored(db)] == [(str(anas["id"]), "ana")]


def test_the_database_refuses_a_second_vote_in_force_even_without_the_server(served, report):
    _, db, _ = served
    make_run(db, report, n=2)
    from filtering.labels.schema import judgements, utc_now

    row = {"question": "photorealism", "pair_id": "1", "model_a": "x", "model_b": "y", "winner": "a",
           "rater_id": 1, "source": "page", "created": utc_now(), "stored": utc_now()}
    with LabelStore(str(db)) as store:
        with store.write() as conn:
            conn.execute(judgements.insert().values(client_id="one", **row))
        with pytest.raises(sa.exc.IntegrityError):
            with store.write() as conn:
                conn.execute(judgements.insert().values(client_id="two", **row))
        with store.write() as conn:   # once the first is undone, a new vote is allowed
            conn.execute(judgements.update().values(undone_at=utc_now()))
            conn.execute(judgements.insert().values(client_id="three", **row))


def test_a_rater_stops_at_the_runs_cap(served, report):
    app, db, tokens = served
    make_run(db, report, n=8, cap=3)
    ana = sign_in(app, tokens["ana"])
    pair = ana.get("/api/compare/next").json()["next"]
    for k in range(3):
        reply = vote(ana, pair, "right", client_id=f"cap-vote-{k:05d}")
        assert reply.status_code == 200
        pair = reply.json()["next"]
    assert pair is None and ana.get("/api/compare/next").json()["next"] is None
    assert sign_in(app, tokens["ben"]).get("/api/compare/next").json()["next"] is not None


def test_a_markup_caption_is_sent_as_plain_text_data(served, report):
    app, db, tokens = served
    tasks = [t for t in plan_pairs(read_report_samples(report), SETTINGS, 12, seed=1, duplicate_fraction=0,
                                   obvious_fraction=0) if t.prompt == MARKUP_PROMPT][:1]
    with LabelStore(str(db)) as store:
        cs.create_run(store, question="caption", report=report, settings=SETTINGS, tasks=tasks, votes_per_pair=1)
    pair = sign_in(app, tokens["ana"]).get("/api/compare/next").json()["next"]
    assert pair["caption"] == MARKUP_PROMPT and pair["question_text"] == "Which image better matches the caption?"
    page = TestClient(app).get("/compare")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


def test_the_admin_overview_names_the_settings_and_the_checks(served, report):
    app, db, tokens = served
    run = make_run(db, report, n=4, obvious=0.5)
    ana = sign_in(app, tokens["ana"])
    pair = ana.get("/api/compare/next").json()["next"]
    while pair is not None:
        pair = vote(ana, pair, "left").json()["next"]
    boss = sign_in(app, tokens["boss"])
    data = boss.get("/api/admin/compare").json()
    assert data["runs"][0]["settings"] == SETTINGS and data["runs"][0]["id"] == run.id
    (question,) = data["questions"]
    (ana_check,) = question["raters"]
    assert ana_check["rater"] == "ana" and ana_check["obvious"] == 2 and ana_check["votes"] == 6
    assert question["position_bias"]["left_wins"] == 4 and question["position_bias"]["decisive"] == 4


def test_a_database_from_before_the_comparison_page_upgrades_in_place_with_its_judgements(tmp_path):
    from filtering.labels.database import open_engine, upgrade

    db = tmp_path / "old.db"
    engine = open_engine(str(db))
    upgrade(engine, "0005")   # the schema before migration 0006, with a vote in it
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO judgements (client_id, question, pair_id, model_a, model_b, winner, "
                             "a_side, source, created, stored) VALUES ('old-1', 'photorealism', 'p1', 'x', 'y', "
                             "'a', 'left', 'import', '2025-01-01 00:00:00', '2025-01-01 00:00:00')")
    engine.dispose()
    with LabelStore(str(db)) as store, store.read() as conn:
        row = conn.exec_driver_sql("SELECT client_id, winner, a_side, check_kind, comparison_pair_id "
                                   "FROM judgements").one()
        assert tuple(row) == ("old-1", "a", "left", None, None)
        assert {"comparison_runs", "comparison_pairs", "comparison_assignments"} <= set(
            sa.inspect(conn).get_table_names())
