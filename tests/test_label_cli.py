"""`glide label` end to end on small embeddings datasets and a real SQLite file."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest

import shards as sh
from filtering.labels import LabelStore, NewLabel
from label_world import MODEL, unit, write_vectors_dataset


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def emb(tmp_path):
    rng = np.random.default_rng(1)
    return write_vectors_dataset(tmp_path / "emb", unit(rng.standard_normal((40, 8))), shards=2)


def test_sample_queues_random_unlabelled_pairs_and_status_counts_them(tmp_path, emb, glide_cli, capsys):
    path, uids = emb
    db = tmp_path / "labels.db"
    with LabelStore(str(db)) as store:  # two pairs labelled already: never picked again
        store.add_labels([NewLabel(uids[0], "people", "yes", "ana"), NewLabel(uids[1], "people", "no", "ana")])
    assert glide_cli("label", "sample", "--db", db, "--embeddings", path, "--filter", "people", "-n", 30,
                     "--seed", 7) == 0
    assert "queued 30 pairs for people in queue people-random-1 (random" in capsys.readouterr().out
    assert glide_cli("label", "sample", "--db", db, "--embeddings", path, "--filter", "people", "-n", 30) == 0
    assert "queued 8 pairs for people in queue people-random-2" in capsys.readouterr().out  # all that is left
    assert glide_cli("label", "sample", "--db", db, "--embeddings", path, "--filter", "people", "-n", 5) == 0
    assert "nothing queued" in capsys.readouterr().out
    with LabelStore(str(db)) as store:
        queued = [p.uid for p in store.pending(filter_name="people")]
        assert store.queue("people-random-1").params["seed"] == 7
    assert sorted(queued) == sorted(uids[2:])
    assert glide_cli("label", "status", "--db", db, "--json") == 0
    out = capsys.readouterr().out
    assert "people-random-1" in out and "seed 7" in out
    figures = last_json(out)
    assert figures["filters"] == {"people": {"yes": 1, "no": 1, "skip": 0, "queued": 38}}
    assert figures["queues"]["people-random-2"] == {"filter": "people", "kind": "random", "items": 8,
                                                    "answered": 0, "pending": 8}


TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.slow
def test_search_queues_the_pairs_nearest_the_clip_text_query(tmp_path, glide_cli, capsys):
    import open_clip
    import torch

    from filtering.clip_features import load_clip_features

    config = tmp_path / "tiny-label-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = tmp_path / "tiny-label-clip.bin"
    torch.save(open_clip.create_model("tiny-label-clip", device="cpu").state_dict(), weights)
    features = load_clip_features(f"{config}={weights}")
    knife = features.encode_text(["a knife"]).numpy()[0]
    rng = np.random.default_rng(2)
    vectors = unit(rng.standard_normal((30, 16)))
    vectors = vectors - np.outer(vectors @ knife, knife) * 0.9  # every other pair mostly away from the query
    vectors[11] = knife                                         # the pair that is the query
    vectors[23] = unit(knife + 0.3 * vectors[3])                # a close second
    path, uids = write_vectors_dataset(tmp_path / "emb", unit(vectors), config={"clip_model": features.describe()})
    db = tmp_path / "labels.db"
    # no --clip: the CLIP recorded in the embeddings' manifest embeds the query
    assert glide_cli("label", "search", "--db", db, "--embeddings", path, "--filter", "violence",
                     "--query", "a knife", "-n", 3) == 0
    assert 'queue violence-search-1 (search, "a knife")' in capsys.readouterr().out
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT uid, similarity FROM queue_items ORDER BY position").fetchall()
        assert raw.execute("SELECT query FROM queues").fetchone()[0] == "a knife"
    assert [r[0] for r in rows[:2]] == [uids[11], uids[23]]
    assert rows[0][1] == pytest.approx(1.0, abs=2e-3) and rows[0][1] > rows[1][1] > rows[2][1]
    # another CLIP of the same shape (other weights) embeds text in another space: refused
    torch.manual_seed(1)
    other = tmp_path / "other-weights.bin"
    torch.save(open_clip.create_model("tiny-label-clip", device="cpu").state_dict(), other)
    capsys.readouterr()
    assert glide_cli("label", "search", "--db", db, "--embeddings", path, "--filter", "violence",
                     "--query", "a knife", "-n", 3, "--clip", f"{config}={other}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"glide: error: --clip {config}={other}: not the CLIP that embedded {path}")


def test_next_queues_the_pairs_nearest_the_filters_boundary_with_version_and_margin(tmp_path, emb, glide_cli, capsys):
    from filtering.filter_files import filters_digest, save_filters
    from filtering.svm_filter import SvmFilter

    path, uids = emb
    rng = np.random.default_rng(5)
    svm = SvmFilter(name="violence", support_vectors=unit(rng.standard_normal((4, 8))).astype(np.float32),
                    dual_coef=np.array([1.0, -0.5, 0.8, -1.2]), gamma=0.7, intercept=-0.05, threshold=-0.2,
                    embedding_model=MODEL)
    filters = tmp_path / "filters"
    save_filters(str(filters), [svm])
    x = np.concatenate([b.column("clip_embedding").flatten().to_numpy().reshape(-1, 8)
                        for b in sh.iter_record_batches(path, ["clip_embedding"])]).astype(np.float32)
    scores = svm.scores_float64(x)
    db = tmp_path / "labels.db"
    assert glide_cli("label", "next", "--db", db, "--embeddings", path, "--filter", "violence", "--filters", filters,
                     "-n", 5) == 0
    assert "(active, filters " in capsys.readouterr().out
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT uid, margin FROM queue_items ORDER BY position").fetchall()
        version, params = raw.execute("SELECT filter_version, params FROM queues").fetchone()
    nearest = np.argsort(np.abs(scores))[:5]
    assert [r[0] for r in rows] == [uids[i] for i in nearest]
    assert np.allclose([r[1] for r in rows], scores[nearest])
    assert version == filters_digest(str(filters)) and json.loads(params)["boundary"] == "svm"
    # a second round picks the next nearest; around the tuned threshold when asked
    assert glide_cli("label", "next", "--db", db, "--embeddings", path, "--filter", "violence", "--filters", filters,
                     "-n", 3, "--boundary", "threshold") == 0
    with sqlite3.connect(db) as raw:
        second = raw.execute("SELECT uid, margin FROM queue_items WHERE queue_id = 2 ORDER BY position").fetchall()
    rest = [i for i in np.argsort(np.abs(scores + 0.2)) if i not in nearest][:3]
    assert [r[0] for r in second] == [uids[i] for i in rest]
    assert np.allclose([r[1] for r in second], scores[rest] + 0.2)


@pytest.mark.parametrize("suffix", [".csv", ".arrow", ".parquet"])
def test_export_then_import_into_a_new_database_gives_the_same_answers_once(tmp_path, emb, glide_cli, capsys, suffix):
    _, uids = emb
    source, copy = tmp_path / "a.db", tmp_path / "b.db"
    with LabelStore(str(source)) as store:
        store.add_labels([NewLabel(uids[0], "people", "yes", "ana"), NewLabel(uids[0], "people", "no", "ben"),
                          NewLabel(uids[1], "hate", "yes", "ana"), NewLabel(uids[2], "hate", "skip", "ben"),
                          NewLabel(uids[3], "people", "yes", "ben")])
        store.undo("ben")  # the undone label is not exported
        expected = store.answers(skips=True)
    out = tmp_path / f"labels{suffix}"
    assert glide_cli("label", "export", "--db", source, "-o", out, "--with-skips") == 0
    assert "exported 4 labels" in capsys.readouterr().out
    assert glide_cli("label", "import", "--db", copy, out) == 0
    assert "imported 4 labels" in capsys.readouterr().out
    assert glide_cli("label", "import", "--db", copy, out) == 0
    assert "imported 0 labels" in (again := capsys.readouterr().out) and "(4 already there)" in again
    with LabelStore(str(copy)) as store:
        assert store.answers(skips=True) == expected
        assert store.labels("people") == [(uids[0], True)]


def test_an_exported_csv_is_what_fit_filters_reads(tmp_path, emb, glide_cli, capsys):
    from filtering.labels_input import read_labels

    _, uids = emb
    db = tmp_path / "labels.db"
    with LabelStore(str(db)) as store:
        store.add_labels([NewLabel(uids[0], "people", "yes", "ana"), NewLabel(uids[1], "people", "skip", "ana"),
                          NewLabel(uids[2], "people", "no", "ana")])
    assert glide_cli("label", "export", "--db", db, "-o", tmp_path / "l.csv") == 0
    text = (tmp_path / "l.csv").read_text()
    assert text.splitlines()[0] == '"uid","filter","label","rater","created","client_id"' and "skip" not in text
    assert read_labels(str(tmp_path / "l.csv")).by_filter == {"people": {uids[0]: True, uids[2]: False}}


def _world(tmp_path, count=24):
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world, write_url_list

    world = tmp_path / "world"
    generate_world(SampleWorldConfig(count=count, image_size=32, people_fraction=0.3, hate_fraction=0.3), world)
    write_url_list(world, "http://127.0.0.1:9")
    rows = pq.read_table(world / "urls.parquet").to_pylist()
    truth = {r["image_id"]: r for r in pq.read_table(world / "truth.parquet").to_pylist()}
    return world, rows, truth


def test_ground_truth_answers_the_queued_pairs_from_the_sample_world(tmp_path, glide_cli, capsys):
    world, rows, truth = _world(tmp_path)
    good = [r for r in rows if r["image_id"] is not None]
    kept = good + [next(r for r in rows if r["image_id"] is None)]  # one crawled pair the world has no truth for
    uids = [sh.compute_uid(r["url"], r["caption"]) for r in kept]
    path, _ = write_vectors_dataset(tmp_path / "emb", unit(np.random.default_rng(0).standard_normal((len(kept), 8))),
                                    uids=uids)
    db = tmp_path / "labels.db"
    assert glide_cli("label", "sample", "--db", db, "--embeddings", path, "--filter", "people", "-n", 10,
                     "--seed", 1) == 0
    assert glide_cli("label", "sample", "--db", db, "--embeddings", path, "--filter", "hate", "-n", 100) == 0
    capsys.readouterr()
    with LabelStore(str(db)) as store:  # hate took all 25 pairs; people 10, perhaps the one without truth
        unknown = sum(p.uid == uids[-1] for p in store.pending())
    assert glide_cli("label", "import", "--db", db, "--from-ground-truth", world) == 0
    out = capsys.readouterr().out
    assert f"answered {35 - unknown} from the ground truth" in out and f"{unknown} pairs not in the world" in out
    expected = {sh.compute_uid(r["url"], r["caption"]): truth[r["image_id"]] for r in good}
    with LabelStore(str(db)) as store:
        people, hate = dict(store.labels("people")), dict(store.labels("hate"))
        assert len(people) == 10 - (unknown - 1) and len(hate) == 24
        assert all(people[u] == expected[u]["people"] for u in people)
        assert all(hate[u] == expected[u]["hate"] for u in hate)
        assert sum(hate.values()) == round(0.3 * 24)
        assert [p.uid for p in store.pending()] == [uids[-1]] * unknown
        assert {a.rater for a in store.answers()} == {"ground-truth"}
    assert glide_cli("label", "import", "--db", db, "--from-ground-truth", world) == 0
    assert "answered 0 from the ground truth" in capsys.readouterr().out  # nothing pending is in the world
    (tmp_path / "uids.txt").write_text("\n".join(uids[:5]) + "\n")
    assert glide_cli("label", "import", "--db", db, "--from-ground-truth", world, "--uids", tmp_path / "uids.txt",
                     "--filter", "violence") == 0
    assert "answered 5 " in capsys.readouterr().out
    with LabelStore(str(db)) as store:
        assert dict(store.labels("violence")) == {u: expected[u]["violence"] for u in uids[:5]}


UID = sh.compute_uid("http://x/1.png", "one")


@pytest.mark.parametrize("name,content,message", [
    ("l.csv", "uid,filter\nx,people\n", "labels need columns uid, filter, label"),
    ("l.csv", f"uid,filter,label\n{UID},people,yes\n{UID},people,maybe\n", "row 2: column 'label': 'maybe' is not"),
    ("l.csv", "uid,filter,label\nabc,people,yes\n", "row 1: uid 'abc' is not a pair uid"),
    ("l.csv", f"uid,filter,label\n{UID},,yes\n", "row 1: column 'filter' is empty"),
    ("l.csv", f"uid,filter,label,created\n{UID},people,yes,yesterday\n",
     "row 1: column 'created': 'yesterday' is not an ISO 8601 time"),
    ("l.csv", f"uid,filter,label,created\n{UID},people,yes,2024-05-01T10:00:00\n", "row 1: column 'created': "),
    ("l.csv", f"uid,filter,label,rater\n{UID},people,yes,two words\n", "row 1: rater 'two words' must be"),
    ("l.json", "{}", "labels files are .csv, .tsv, .arrow, .feather or .parquet"),
    ("l.arrow", "not arrow at all", "not a readable arrow labels file"),
    ("missing.csv", None, "labels file not found"),
])
def test_a_bad_labels_file_is_exit_2_with_one_line_naming_it(tmp_path, glide_cli, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert glide_cli("label", "import", "--db", tmp_path / "labels.db", path) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"glide: error: {path}: {message}") and err.count("\n") == 1
    with LabelStore(str(tmp_path / "labels.db")) as store:
        assert store.answers() == []  # a file that fails stores none of its rows, the good ones before it neither


def test_bad_commands_are_exit_2_with_one_line(tmp_path, emb, glide_cli, capsys):
    path, _ = emb
    db = tmp_path / "labels.db"
    for argv, message in [
        (("label", "status", "--db", tmp_path / "none.db"), f"{tmp_path / 'none.db'}: no labels database there"),
        (("label", "sample", "--embeddings", path, "--filter", "people"), "--db: give the labels database"),
        (("label", "sample", "--db", db, "--embeddings", path, "--filter", "People"), "--filter: filter name"),
        (("label", "sample", "--db", db, "--embeddings", tmp_path / "nothing", "--filter", "people"), "no shards"),
        (("label", "import", "--db", db), "label import: give a labels FILE or --from-ground-truth"),
        (("label", "next", "--db", db, "--embeddings", path, "--filter", "hate", "--filters", tmp_path),
         "not a filters folder"),
        (("label", "import", "--db", db, "--from-ground-truth", tmp_path / "no-world"), "no sample world folder"),
        (("label", "export", "--db", db, "-o", tmp_path / "out.txt"), "labels files are .csv"),
    ]:
        assert glide_cli(*argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("glide: error: ") and message in err and err.count("\n") == 1, (argv, err)


def test_a_bad_row_after_many_good_ones_stores_none_of_the_file(tmp_path, glide_cli, capsys):
    from label_world import uid_of

    good = [f"{uid_of(i)},people,{'yes' if i % 3 else 'no'}" for i in range(1200)]  # more than one write chunk
    path = tmp_path / "l.csv"
    path.write_text("uid,filter,label\n" + "\n".join(good) + f"\n{uid_of(0)},people,perhaps\n")
    assert glide_cli("label", "import", "--db", tmp_path / "labels.db", path) == 2
    assert "row 1201: column 'label': 'perhaps'" in capsys.readouterr().err
    with LabelStore(str(tmp_path / "labels.db")) as store:
        assert store.answers() == []
    path.write_text("uid,filter,label\n" + "\n".join(good) + "\n")
    assert glide_cli("label", "import", "--db", tmp_path / "labels.db", path) == 0
    with LabelStore(str(tmp_path / "labels.db")) as store:
        assert len(store.labels("people")) == 1200
