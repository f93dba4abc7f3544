"""Picking pairs to label, streamed over shards and record batches: text search, boundary, random."""
from __future__ import annotations

import numpy as np
import pytest

import shards as sh
from filtering.labels.selection import BestN, nearest_to_boundary, nearest_to_text, random_pairs
from label_world import unit, write_vectors_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 unit vectors in 8-d over 3 shards of 7-row batches; row i leans towards e0 by i/60."""
    rng = np.random.default_rng(0)
    lean = np.arange(60) / 60.0
    noise = unit(rng.standard_normal((60, 8)) * np.array([0] + [1] * 7))  # orthogonal to e0
    vectors = unit(lean[:, None] * np.eye(8)[0] + (1 - lean[:, None]) * noise)
    rng.shuffle(order := np.arange(60))  # the nearest rows are spread over the shards
    path, uids = write_vectors_dataset(tmp_path_factory.mktemp("emb") / "emb", vectors[order], shards=3)
    return {"path": path, "uids": uids, "vectors": vectors[order].astype(np.float16).astype(np.float32)}


def test_search_returns_the_vectors_nearest_a_known_query_in_order(dataset):
    query = np.eye(8, dtype=np.float32)[0]
    picks = nearest_to_text(dataset["path"], query, 5)
    similarity = dataset["vectors"] @ query
    expected = np.argsort(-similarity)[:5]
    assert [p.uid for p in picks] == [dataset["uids"][i] for i in expected]
    assert np.allclose([p.value for p in picks], similarity[expected], atol=1e-6)


def test_search_skips_the_excluded_pairs(dataset):
    query = np.eye(8, dtype=np.float32)[0]
    best = [p.uid for p in nearest_to_text(dataset["path"], query, 3)]
    picks = nearest_to_text(dataset["path"], query, 3, exclude={best[0], best[2]})
    assert best[0] not in [p.uid for p in picks] and best[2] not in [p.uid for p in picks]
    assert picks[0].uid == best[1]


def test_boundary_picks_the_pairs_whose_score_is_nearest_it_with_signed_margins(dataset):
    w = unit(np.arange(1, 9, dtype=np.float64))

    def score(matrix):  # a linear stand-in for the SVM: the library takes any score function
        return matrix.astype(np.float64) @ w - 0.3

    picks = nearest_to_boundary(dataset["path"], score, 6)
    scores = dataset["vectors"].astype(np.float64) @ w - 0.3
    expected = np.argsort(np.abs(scores))[:6]
    assert [p.uid for p in picks] == [dataset["uids"][i] for i in expected]
    assert np.allclose([p.value for p in picks], scores[expected])
    shifted = nearest_to_boundary(dataset["path"], score, 6, at=0.2)  # e.g. the tuned threshold
    assert [p.uid for p in shifted] == [dataset["uids"][i] for i in np.argsort(np.abs(scores - 0.2))[:6]]


def test_random_pairs_are_distinct_reproducible_and_never_excluded(dataset):
    exclude = set(dataset["uids"][:40])
    first = [p.uid for p in random_pairs(dataset["path"], 10, exclude, seed=3)]
    assert first == [p.uid for p in random_pairs(dataset["path"], 10, exclude, seed=3)]
    assert len(set(first)) == 10 and not set(first) & exclude
    everything = random_pairs(dataset["path"], 100, exclude, seed=4)  # asks for more than are left
    assert sorted(p.uid for p in everything) == sorted(set(dataset["uids"]) - exclude)


def test_the_same_pairs_in_another_order_and_sharding_give_the_same_picks(dataset, tmp_path):
    """A crawl made on another cluster holds the same pairs in other shards and orders: the random
    draw, the search and the boundary picks must not change with that (equal scores ordered by uid)."""
    reverse = np.arange(len(dataset["uids"]))[::-1]
    vectors = dataset["vectors"].copy()
    vectors[reverse[:6]] = vectors[reverse[0]]              # six identical vectors: tied scores
    original, _ = write_vectors_dataset(tmp_path / "a", vectors, uids=dataset["uids"], shards=3)
    reordered, _ = write_vectors_dataset(tmp_path / "b", vectors[reverse], uids=[dataset["uids"][i] for i in reverse],
                                         shards=5, batch_rows=4)
    query = unit(vectors[reverse[0]].astype(np.float64))

    def picks(path):
        return ([p.uid for p in random_pairs(path, 10, seed=3)], [p.uid for p in nearest_to_text(path, query, 4)],
                [p.uid for p in nearest_to_boundary(path, lambda m: m.astype(np.float64) @ query - 1.0, 3)])

    assert picks(original) == picks(reordered)
    tied = [p.uid for p in nearest_to_text(original, query, 4)]
    assert tied == sorted(tied)                            # the four of the six tied rows, by uid


def test_random_pairs_cover_the_dataset_uniformly(dataset):
    counts = dict.fromkeys(dataset["uids"], 0)
    for seed in range(300):
        for p in random_pairs(dataset["path"], 6, seed=seed):
            counts[p.uid] += 1
    # 300 draws of 6 of 60: each pair expected 30 times (sd ~5.2)
    assert min(counts.values()) >= 12 and max(counts.values()) <= 50


def test_best_n_keeps_n_rows_and_a_repeated_pair_once():
    import pyarrow as pa

    best = BestN(3)
    best.offer(np.array([5.0, 1.0, 4.0]), np.array([50.0, 10.0, 40.0]), pa.array(["a", "b", "c"]))
    best.offer(np.array([0.5, 2.0, 9.0]), np.array([5.0, 20.0, 90.0]), pa.array(["b", "d", "e"]))  # b again
    assert len(best.keys) == 3
    assert [(p.uid, p.value) for p in best.picks()] == [("b", 10.0), ("d", 20.0), ("c", 40.0)]


def test_a_dataset_without_shards_or_embeddings_is_a_user_error(tmp_path, dataset):
    with pytest.raises(sh.UserError, match="no shards"):
        random_pairs(str(tmp_path), 3)
    with pytest.raises(sh.UserError, match="has no column 'clip_embedding'"):
        folder = tmp_path / "pairs"
        sh.write_table(sh.join(str(folder), "shards", sh.shard_name(0)), sh.PAIRS_SCHEMA.empty_table())
        nearest_to_text(str(folder), np.ones(8), 3)
