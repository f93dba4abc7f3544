"""The labelling page's HTTP API in-process (Starlette's test client, a real SQLite file and dataset):
sign-in, answers stored once, undo, admin-only actions, and forged or hostile requests refused."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from starlette.testclient import TestClient

from filtering.labels import LabelStore
from label_page_world import MARKUP, picture, picture_dataset, queue_db, rater_tokens
from pipeline.webapp.app import create_app
from pipeline.webapp.context import AppContext, ServeSettings



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset of 12 pictures (one with a caption full of markup), a queue of 10, two raters and an admin."""
    tmp = tmp_path_factory.mktemp("page-api")
    dataset, uids = picture_dataset(tmp / "emb", 12, markup_at=1)
    return tmp, dataset, uids


@pytest.fixture
def served(world, tmp_path):
    _, dataset, uids = world
    db = tmp_path / "labels.db"
    queue = queue_db(db, dataset, uids[:10], labels_per_item=2)
    tokens = {**rater_tokens(db, ["ana", "ben"]), **rater_tokens(db, ["boss"], admin=True)}
    context = AppContext.open(ServeSettings(db=str(db), dataset=dataset, gold_every=0))
    app = create_app(context=context)
    yield app, db, queue, tokens, uids
    context.store.close()


def sign_in(app, token) -> TestClient:
    client = TestClient(app)
    assert client.get("/signin").status_code == 200
    reply = client.post("/api/signin", json={"token": token}, headers={"X-CSRF-Token": client.cookies["glide_signin"]})
    assert reply.status_code == 200, reply.text
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf"]
    return client


def label(client, item, answer="yes", client_id="c" * 32, **extra):
    return client.post("/api/labels", json={"client_id": client_id, "uid": item["uid"], "filter": item["filter"],
                                            "queue_id": item["queue_id"], "answer": answer, **extra})


def stored_labels(db):
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT client_id, uid, answer, source, answer_ms, undone_at FROM labels ORDER BY id").fetchall()


def test_a_rater_labels_and_a_resent_answer_is_stored_once(served):
    app, db, queue, tokens, uids = served
    ana = sign_in(app, tokens["ana"])
    first = ana.get("/api/next").json()["next"]
    assert (first["uid"], first["filter"], first["queue"], first["caption"]) == (
        uids[0], "people", queue.name, "a picture number 0")
    pressed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)  # sent late (a retry): the key's time
    reply = label(ana, first, "no", "press-0000000001", answer_ms=1234, created=pressed.isoformat())
    assert reply.status_code == 200 and reply.json()["stored"] is True and reply.json()["next"]["uid"] == uids[1]
    again = label(ana, first, "no", "press-0000000001", answer_ms=1234)   # the reply was lost: the page resends
    assert again.json()["stored"] is False and again.json()["next"]["uid"] == uids[1]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in stored_labels(db)] == [
        ("press-0000000001", uids[0], "no", "page", 1234)]
    with LabelStore(str(db)) as store:
        assert store.history(uids[0], "people")[0]["created"] == pressed
    second = ana.get("/api/next").json()["next"]   # a client clock years behind is not believed
    label(ana, second, "yes", "press-0000000002", created="2020-01-01T00:00:00Z")
    with LabelStore(str(db)) as store:
        assert store.history(second["uid"], "people")[0]["created"] > pressed
    progress = {q["name"]: q for q in ana.get("/api/progress").json()["queues"]}
    assert progress[queue.name] == {"id": queue.id, "name": queue.name, "filter": "people", "kind": "random",
                                    "items": 10, "answered": 0, "labels_per_item": 2, "mine": 2}


def test_undo_steps_back_and_serves_the_pair_again(served):
    app, db, _, tokens, uids = served
    ana = sign_in(app, tokens["ana"])
    item = ana.get("/api/next").json()["next"]
    for i in range(3):
        item = label(ana, item, "yes", f"press-{i:012d}").json()["next"]
    undo = ana.post("/api/undo", json={"client_id": "undo-000000000001"}).json()
    assert undo["undone"] == {"uid": uids[2], "filter": "people", "answer": "yes", "restored": None}
    assert undo["next"]["uid"] == uids[2]
    resent = ana.post("/api/undo", json={"client_id": "undo-000000000001"}).json()   # a resend reverts nothing more
    assert resent["undone"]["uid"] == uids[2]
    assert ana.post("/api/undo", json={"client_id": "undo-000000000002"}).json()["next"]["uid"] == uids[1]
    assert [r[5] is not None for r in stored_labels(db)] == [False, True, True]
    assert ana.get("/api/next").json()["next"]["uid"] == uids[1]   # a reload shows the undone pair


@pytest.mark.parametrize("headers,status", [
    ({"X-CSRF-Token": None}, 403),                                   # no token
    ({"X-CSRF-Token": "0" * 64}, 403),                               # a wrong one
    ({"Origin": "http://evil.example"}, 403),                        # another site's page
    ({"Origin": "null"}, 403),                                       # a sandboxed frame or a file
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),                          # another port of the same host
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),    # what a plain cross-site form can send
    ({"Content-Type": "text/plain"}, 415),
])
def test_forged_posts_are_refused_and_store_nothing(served, headers, status):
    app, db, _, tokens, uids = served
    ana = sign_in(app, tokens["ana"])
    item = ana.get("/api/next").json()["next"]
    body = {"client_id": "forged-0000000001", "uid": item["uid"], "filter": "people", "queue_id": item["queue_id"],
            "answer": "yes"}
    csrf = ana.headers.pop("X-CSRF-Token")  # each request below sends exactly the headers given
    sent = {k: v for k, v in {"Content-Type": "application/json", "X-CSRF-Token": csrf, **headers}.items()
            if v is not None}

    reply = ana.post("/api/labels", content=json.dumps(body), headers=sent)
    assert reply.status_code == status, reply.text
    assert ana.post("/api/undo", content=json.dumps({"client_id": "forged-undo-00001"}), headers=sent).status_code == status
    assert stored_labels(db) == []


def test_sign_in_needs_a_valid_token_and_the_sign_in_pages_cookie(served):
    app, _, _, tokens, _ = served
    client = TestClient(app)
    assert client.get("/api/me").status_code == 401 and client.get("/api/next").status_code == 401
    client.get("/signin")
    csrf = {"X-CSRF-Token": client.cookies["glide_signin"]}
    assert client.post("/api/signin", json={"token": "x" * 43}, headers=csrf).status_code == 401
    assert client.post("/api/signin", json={"token": tokens["ana"]}).status_code == 403       # no double submit
    other = TestClient(app)                                                                  # login CSRF: no cookie
    assert other.post("/api/signin", json={"token": tokens["ana"]}, headers=csrf).status_code == 403
    reply = client.post("/api/signin", json={"token": tokens["ana"]}, headers=csrf)
    assert reply.status_code == 200 and reply.json() == {"rater": "ana", "admin": False}
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_revoked_rater_is_out_at_the_next_request(served):
    app, db, _, tokens, _ = served
    ana = sign_in(app, tokens["ana"])
    item = ana.get("/api/next").json()["next"]
    with LabelStore(str(db)) as store:
        store.revoke_rater("ana")
    assert label(ana, item).status_code == 401 and stored_labels(db) == []


def test_only_the_admin_sees_the_overview_creates_queues_and_exports(served):
    app, db, queue, tokens, uids = served
    ana, boss = sign_in(app, tokens["ana"]), sign_in(app, tokens["boss"])
    for client in (ana, TestClient(app)):  # a rater's session, and none at all
        assert client.get("/api/admin/overview").status_code in (401, 403)
        assert client.get("/api/admin/export").status_code in (401, 403)
        assert client.post("/api/admin/queues", json={"kind": "random", "filter": "people", "n": 2}).status_code in (401, 403)
    ben = sign_in(app, tokens["ben"])
    for client in (ana, ben):
        item = client.get("/api/next").json()["next"]
        label(client, item, "yes", f"first-{client is ana}-000000")
    created = boss.post("/api/admin/queues", json={"kind": "random", "filter": "hate", "n": 5, "labels_per_item": 3,
                                                   "seed": 4})
    assert created.status_code == 200, created.text
    assert (created.json()["queue"]["items"], created.json()["queue"]["labels_per_item"]) == (5, 3)
    overview = boss.get("/api/admin/overview").json()
    assert [q["name"] for q in overview["queues"]] == [queue.name, "hate-random-2"]
    assert {r["name"]: r["labels"] for r in overview["raters"]} == {"ana": 1, "ben": 1, "boss": 0}
    [people] = overview["agreement"]
    assert (people["filter"], people["items"], people["raters"]) == ("people", 1, 2)
    export = boss.get("/api/admin/export?filter=people")
    assert export.status_code == 200 and export.headers["content-disposition"].startswith("attachment")
    lines = export.text.splitlines()
    assert lines[0] == '"uid","filter","label","rater","created","client_id"' and len(lines) == 3
    assert boss.post("/api/admin/queues", json={"kind": "active", "filter": "hate", "n": 5}).status_code == 409
    assert boss.post("/api/admin/queues", json={"kind": "random", "filter": "Bad Name", "n": 5}).status_code == 422


@pytest.mark.parametrize("path", [
    "/image/../../etc/passwd", "/image/..%2F..%2F..%2Fetc%2Fpasswd", "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/....//....//etc//passwd", "/image/%00", "/image/" + "a" * 31 + "/", "/image/C:%5Cwindows%5Cwin.ini",
    "/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e%2fcontext.py", "/image/shards/part-00000.arrow",
])
def test_image_and_static_requests_never_reach_a_path(served, path):
    app, _, _, tokens, _ = served
    ana = sign_in(app, tokens["ana"])
    reply = ana.get(path)
    assert reply.status_code == 404, (path, reply.status_code)
    assert b"root:" not in reply.content and b"import" not in reply.content


def test_images_come_by_uid_to_signed_in_raters_only(served):
    app, _, _, tokens, uids = served
    assert TestClient(app).get(f"/image/{uids[3]}").status_code == 401
    reply = sign_in(app, tokens["ana"]).get(f"/image/{uids[3]}")
    assert reply.status_code == 200 and reply.content == picture(3)
    assert reply.headers["content-type"] == "image/png" and reply.headers["x-content-type-options"] == "nosniff"


def test_captions_are_data_and_pages_run_no_inline_script(served):
    app, _, _, tokens, uids = served
    ana = sign_in(app, tokens["ana"])
    item = label(ana, ana.get("/api/next").json()["next"], "no", "mark-000000000001").json()["next"]
    assert item["uid"] == uids[1] and item["caption"] == MARKUP       # text, handed over as JSON data
    for path in ("/", "/admin", "/signin"):
        page = ana.get(path)
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert "<script>" not in page.text and "onerror" not in page.text  # no inline scripts, no caption
    assert ana.get("/api/next").headers["cache-control"] == "no-store"


def test_an_answer_for_a_pair_the_queue_does_not_hold_is_refused(served):
    app, db, _, tokens, uids = served
    ana = sign_in(app, tokens["ana"])
    item = ana.get("/api/next").json()["next"]
    assert label(ana, {**item, "uid": uids[11]}).status_code == 409          # not in the queue
    assert label(ana, item, "maybe").status_code == 422
    assert label(ana, item, client_id="short").status_code == 422
    assert label(ana, item, extra_field=1).status_code == 422
    assert stored_labels(db) == []


def test_raters_and_gold_from_the_command_line(tmp_path, world, glide_cli, capsys):
    _, _, uids = world
    db = tmp_path / "labels.db"
    assert glide_cli("label", "raters", "add", "ana", "--db", db, "--url", "https://labels.example.org/") == 0
    link = capsys.readouterr().out.splitlines()[0]
    assert link.startswith("rater ana: https://labels.example.org/signin#token=")
    token = link.split("#token=")[1]
    with LabelStore(str(db)) as store:
        assert store.authenticate(token).name == "ana"
    assert glide_cli("label", "raters", "add", "root", "--admin", "--db", db) == 0
    assert capsys.readouterr().out.startswith("admin root: http://127.0.0.1:8765/signin#token=")
    assert glide_cli("label", "raters", "revoke", "ana", "--db", db) == 0
    assert glide_cli("label", "raters", "list", "--db", db) == 0
    out = capsys.readouterr().out
    assert "ana" in out and "revoked" in out and "root" in out and "admin" in out
    assert glide_cli("label", "raters", "revoke", "nobody", "--db", db) == 2
    assert "no rater named 'nobody'" in capsys.readouterr().err
    gold = tmp_path / "gold.csv"
    gold.write_text(f"uid,filter,label\n{uids[0]},people,yes\n{uids[1]},people,no\n{uids[2]},people,skip\n")
    assert glide_cli("label", "gold", gold, "--db", db) == 0
    assert "added 2 gold items (1 yes, 1 no" in capsys.readouterr().out
    assert glide_cli("serve", "--db", db, "--dataset", tmp_path / "nothing") == 2
    assert "no shards" in capsys.readouterr().err


@pytest.mark.slow
def test_labels_given_on_the_page_are_what_fit_filters_learns_from(tmp_path, glide_cli, capsys):
    """The filter loop with a person instead of the ground truth: queue, label on the page, fit-filters."""
    import numpy as np

    from label_world import unit, write_vectors_dataset

    rng = np.random.default_rng(3)
    n = 160
    truth = rng.random(n) < 0.4
    direction = unit(rng.standard_normal(8))
    vectors = unit(rng.standard_normal((n, 8)) * 0.5 + np.where(truth, 1.5, -1.5)[:, None] * direction)
    dataset, uids = write_vectors_dataset(tmp_path / "emb", vectors, images=[picture(i) for i in range(n)])
    answers = {uid: bool(t) for uid, t in zip(uids, truth)}
    db = tmp_path / "labels.db"
    assert glide_cli("label", "sample", "--db", db, "--embeddings", dataset, "--filter", "people", "-n", n) == 0
    token = rater_tokens(db, ["ana"])["ana"]
    context = AppContext.open(ServeSettings(db=str(db), dataset=dataset))
    try:
        ana = sign_in(create_app(context=context), token)
        item, pressed = ana.get("/api/next").json()["next"], 0
        while item is not None:                 # ana looks at each picture and answers what she sees
            item = label(ana, item, "yes" if answers[item["uid"]] else "no", f"key-{pressed:012d}").json()["next"]
            pressed += 1
    finally:
        context.store.close()
    assert pressed == n
    capsys.readouterr()
    assert glide_cli("fit-filters", "--labels", db, "--embeddings", dataset, "-o", tmp_path / "filters",
                     "--target-fnr", "0.3", "--held-out", "60", "--json") == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["filters"]["people"]
    assert figures["held_out_positives"] >= 9 and figures["fnr"] <= 0.3


def test_the_server_socket_says_tcp_so_replies_are_not_held_for_delayed_acks():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it every reply
    (headers, then body) waited 40 ms for the client's delayed ACK."""
    import socket

    from pipeline.webapp.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


def test_the_admin_makes_an_active_learning_queue_from_the_current_filters(world, tmp_path):
    import numpy as np

    from filtering.filter_files import save_filters
    from filtering.svm_filter import SvmFilter
    from label_world import MODEL, unit

    _, dataset, _ = world
    rng = np.random.default_rng(5)
    svm = SvmFilter(name="violence", support_vectors=unit(rng.standard_normal((4, 8))).astype(np.float32),
                    dual_coef=np.array([1.0, -0.5, 0.8, -1.2]), gamma=0.7, intercept=-0.05, threshold=-0.2,
                    embedding_model=MODEL)
    save_filters(str(tmp_path / "filters"), [svm])
    db = tmp_path / "labels.db"
    token = rater_tokens(db, ["boss"], admin=True)["boss"]
    context = AppContext.open(ServeSettings(db=str(db), dataset=dataset, filters=str(tmp_path / "filters")))
    try:
        boss = sign_in(create_app(context=context), token)
        assert boss.get("/api/admin/overview").json()["can"] == {"random": True, "search": True, "active": True}
        reply = boss.post("/api/admin/queues", json={"kind": "active", "filter": "violence", "n": 4,
                                                     "labels_per_item": 2})
        assert reply.status_code == 200, reply.text
        queue = reply.json()["queue"]
        assert (queue["kind"], queue["items"], queue["labels_per_item"]) == ("active", 4, 2)
        assert queue["picked_by"].startswith("filters ") and boss.get("/api/next").json()["next"]["filter"] == "violence"
    finally:
        context.store.close()
