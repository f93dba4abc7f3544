"""The labels database on a real SQLite file: WAL, concurrent writers, idempotent labels, undo, migrations."""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest
import sqlalchemy as sa

import shards as sh
from filtering.labels import LabelStore, NewLabel, load_labels
from filtering.labels.database import current_revision, head_revision, open_engine, read_transaction, upgrade
from filtering.labels.queues import QueueItem
from filtering.labels.schema import metadata
from label_world import uid_of

U = [uid_of(i) for i in range(20)]


@pytest.fixture
def store(tmp_path):
    with LabelStore(str(tmp_path / "labels.db")) as s:
        yield s


def test_a_new_database_is_a_sqlite_file_in_wal_mode_with_a_busy_timeout_at_the_newest_schema(tmp_path):
    path = tmp_path / "labels.db"
    with LabelStore(str(path), busy_timeout_s=12) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file
    assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision() == "0006"


def test_the_migrations_build_exactly_the_tables_the_code_uses(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with LabelStore(str(tmp_path / "labels.db")) as store, store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_the_same_client_id_twice_is_one_label(store):
    first = store.add_label(U[0], "people", "yes", "ana", client_id="press-1")
    again = store.add_labels([NewLabel(U[0], "people", "yes", "ana", client_id="press-1"),
                              NewLabel(U[0], "people", "yes", "ana", client_id="press-1")])
    assert (first.stored, first.duplicates) == (1, 0) and (again.stored, again.duplicates) == (0, 2)
    assert len(store.history(U[0], "people")) == 1


def test_undo_steps_back_through_the_audit_trail_and_a_resent_undo_reverts_once(store):
    store.add_label(U[0], "violence", "no", "ana", client_id="a1")
    store.add_label(U[0], "violence", "yes", "ana", client_id="a2")   # ana changes her mind
    store.add_label(U[1], "violence", "yes", "ana", client_id="a3")
    undone = store.undo("ana", client_id="undo-1")                    # reverts a3: U[1] unanswered again
    assert (undone.uid, undone.answer, undone.restored) == (U[1], "yes", None)
    assert store.undo("ana", client_id="undo-1") == undone            # the page resent its undo
    second = store.undo("ana", client_id="undo-2")                    # reverts a2: her earlier "no" is back
    assert (second.uid, second.answer, second.restored) == (U[0], "yes", "no")
    assert store.labels("violence") == [(U[0], False)]
    history = store.history(U[0], "violence")
    assert [(h["answer"], h["undone_at"] is not None) for h in history] == [("no", False), ("yes", True)]
    with store.read() as conn:
        events = conn.execute(sa.text("SELECT label_id, action, client_id FROM label_events ORDER BY id")).all()
    assert [tuple(e) for e in events] == [(3, "undo", "undo-1"), (2, "undo", "undo-2")]
    assert store.undo("nobody") is None


def test_labels_take_each_raters_latest_answer_any_yes_wins_and_skips_are_left_out(store):
    store.add_labels([
        NewLabel(U[0], "people", "no", "ana"), NewLabel(U[0], "people", "yes", "ben"),   # raters disagree: yes
        NewLabel(U[1], "people", "yes", "ana"), NewLabel(U[1], "people", "no", "ana"),   # ana's latest: no
        NewLabel(U[2], "people", "skip", "ana"),                                          # only a skip: left out
        NewLabel(U[3], "people", "no", "ana"), NewLabel(U[3], "people", "skip", "ben"),
        NewLabel(U[4], "hate", "yes", "ana"),
    ])
    assert store.labels("people") == sorted([(U[0], True), (U[1], False), (U[3], False)])
    assert store.filters() == ["people", "hate"]
    status = store.status()["filters"]
    assert status["people"] == {"yes": 1, "no": 2, "skip": 1, "queued": 0}
    assert [(a.uid, a.rater, a.answer) for a in store.answers("people", skips=False) if a.uid == U[3]] == \
        [(U[3], "ana", "no")]


def test_bad_labels_are_refused_naming_the_field(store):
    for label, message in [
        (NewLabel("not-a-uid", "people", "yes", "ana"), "uid 'not-a-uid' is not a pair uid"),
        (NewLabel(U[0], "People!", "yes", "ana"), "filter name 'People!'"),
        (NewLabel(U[0], "people", "maybe", "ana"), "answer 'maybe' is not one of yes, no, skip"),
        (NewLabel(U[0], "people", "yes", "a b"), "rater 'a b' must be"),
    ]:
        with pytest.raises(sh.UserError, match=f"^page: {message}"):
            store.add_labels([label], where="page")


def _write_many(db: str, worker: int, count: int) -> None:
    """One rater labelling `count` pairs one at a time, as the page does, and resending each answer."""
    store = LabelStore(db)
    for i in range(count):
        label = NewLabel(uid_of(1000 * worker + i), "people", "yes" if i % 2 else "no", f"rater{worker}",
                         client_id=f"w{worker}-{i}")
        store.add_labels([label])
        store.add_labels([label])
        if i % 10 == 0:
            store.labels("people")  # readers run beside the writers
    store.close()


def _count_labels(db: str) -> tuple[int, int]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT count(*), count(DISTINCT client_id) FROM labels").fetchone()


def test_writers_in_many_threads_store_every_label_once_with_no_lock_errors(tmp_path):
    db = str(tmp_path / "labels.db")
    LabelStore(db).close()
    errors = []

    def work(worker):
        try:
            _write_many(db, worker, 60)
        except Exception as e:  # any "database is locked" lands here
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count_labels(db) == (480, 480)


@pytest.mark.slow
def test_writers_in_several_processes_opening_a_new_file_at_once_store_every_label_once(tmp_path):
    db = str(tmp_path / "labels.db")  # not created yet: the processes race to create and migrate it
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=_write_many, args=(db, w, 40)) for w in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    assert _count_labels(db) == (160, 160)


def test_a_database_at_the_first_schema_upgrades_on_open_and_keeps_its_labels(tmp_path):
    path = tmp_path / "old.db"
    engine = open_engine(str(path))
    upgrade(engine, "0001")  # the file as the first release wrote it
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO raters (id, name, created) VALUES (1, 'ana', '2024-05-01 10:00:00')")
        conn.exec_driver_sql(
            "INSERT INTO labels (client_id, uid, filter, answer, rater_id, source, created, stored) "
            f"VALUES ('old-1', '{U[0]}', 'people', 'yes', 1, 'page', '2024-05-01 10:00:00', '2024-05-01 10:00:01')")
        conn.exec_driver_sql("INSERT INTO queues (name, filter, kind, created) "
                             "VALUES ('people-random-1', 'people', 'random', '2024-05-01 09:00:00')")
        assert current_revision(conn) == "0001"
    engine.dispose()
    assert "token_hash" not in [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(raters)")]

    with LabelStore(str(path)) as store:
        with store.read() as conn:
            assert current_revision(conn) == head_revision()
        assert store.labels("people") == [(U[0], True)]
        assert store.queue("people-random-1").labels_per_item == 1  # the new column's default
        token = store.add_rater("ana")                               # the new columns work
        assert store.authenticate(token).name == "ana"


def test_a_database_from_a_newer_release_is_refused_naming_it(tmp_path):
    path = tmp_path / "new.db"
    LabelStore(str(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(sh.UserError, match=rf"^{path}: labels schema revision '0099' is not one this release knows"):
        LabelStore(str(path))


@pytest.mark.parametrize("content,message", [
    (b"these are not the tables you are looking for\n" * 40, "not a readable labels database"),
    (None, "holds tables (notes) but no labels schema version"),
])
def test_a_file_that_is_not_a_labels_database_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "other.db"
    if content is None:
        sqlite3.connect(path).execute("CREATE TABLE notes (x)").connection.commit()
    else:
        path.write_bytes(content)
    with pytest.raises(sh.UserError) as e:
        LabelStore(str(path))
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


def test_opening_a_missing_database_to_read_does_not_create_it(tmp_path):
    with pytest.raises(sh.UserError, match="no labels database there"):
        LabelStore(str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(sh.UserError, match="folder .* does not exist"):
        LabelStore(str(tmp_path / "no" / "such" / "labels.db"))


def test_rater_tokens_are_stored_hashed_and_stop_working_when_revoked(tmp_path):
    path = tmp_path / "labels.db"
    with LabelStore(f"sqlite:///{path}") as store:
        token = store.add_rater("ana", admin=True)
        rater = store.authenticate(token)
        assert (rater.name, rater.is_admin) == ("ana", True)
        assert store.authenticate(token + "x") is None
        assert store.revoke_rater("ana") and store.authenticate(token) is None
        assert not store.revoke_rater("nobody")
        again = store.add_rater("ana")  # a new token lifts the revocation
        assert store.authenticate(again).name == "ana" and store.authenticate(token) is None
    with read_transaction(open_engine(str(path))) as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM raters").scalar()
    assert token not in path.read_bytes().decode("latin-1") and len(stored) == 64


def test_queue_items_are_pending_until_answered_from_any_door(store):
    queue = store.create_queue(filter_name="hate", kind="search", query="a strange symbol", dataset="emb",
                               items=[QueueItem(U[i], similarity=1.0 - i / 10) for i in range(3)])
    assert (queue.name, queue.items, queue.answered) == ("hate-search-1", 3, 0)
    store.add_label(U[1], "hate", "skip", "ana")
    store.add_label(U[2], "people", "yes", "ana")  # another filter: does not answer a hate item
    assert [p.uid for p in store.pending(queue="hate-search-1")] == [U[0], U[2]]
    assert store.seen_uids("hate") == {U[0], U[1], U[2]}
    with pytest.raises(sh.UserError, match="--queue: a queue named 'hate-search-1' exists"):
        store.create_queue(filter_name="hate", kind="random", items=[], name="hate-search-1")
    with pytest.raises(sh.UserError, match="--queue: no queue named 'nope'"):
        store.pending(queue="nope")


def test_fit_filters_reads_the_database_like_a_labels_file(tmp_path, store):
    from filtering.labels_input import read_labels

    store.add_labels([NewLabel(U[0], "people", "yes", "ana"), NewLabel(U[1], "people", "no", "ana"),
                      NewLabel(U[2], "violence", "skip", "ana"), NewLabel(U[3], "violence", "no", "ben")])
    for source in (store.db, f"sqlite:///{store.db}"):
        labels = read_labels(source)
        assert labels.by_filter == {"people": {U[0]: True, U[1]: False}, "violence": {U[3]: False}}
        assert load_labels(source, "people") == sorted([(U[0], True), (U[1], False)])
    csv = tmp_path / "labels.csv"
    csv.write_text(f"uid,filter,label,rater\n{U[0]},people,no,ana\n{U[0]},people,yes,ana\n{U[1]},people,skip,ana\n")
    assert load_labels(str(csv), "people") == [(U[0], True)]  # ana's later row wins; the skip is left out


def test_the_migrations_revert_and_replay(tmp_path):
    from alembic import command

    from filtering.labels.database import alembic_config, write_transaction

    engine = open_engine(str(tmp_path / "labels.db"))
    upgrade(engine)
    with write_transaction(engine) as conn:
        command.downgrade(alembic_config(conn), "0001")
        assert "leases" not in sa.inspect(conn).get_table_names()
    upgrade(engine)
    with read_transaction(engine) as conn:
        assert current_revision(conn) == head_revision() and "leases" in sa.inspect(conn).get_table_names()
