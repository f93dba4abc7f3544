"""`make demo`'s filter steps (pipeline.demo_filters) on a tiny sample world: the real `glide label`,
`fit-filters` and `filter` commands, labels answered from the world's truth, two active-learning rounds;
two filters (people from random labels, hate from a CLIP text search) and a one-point SVM grid keep it
short.

The embeddings are written here instead of by `glide embed` (a CLIP that learns the stand-ins takes
minutes): each pair's vector carries its categories along the text features a small clean CLIP
gives "a person", "a knife" and "a strange symbol", so `glide label search` with that CLIP finds
seed positives as the demo's does, and the manifest records that CLIP as the embed stage would.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import shards as sh
from label_world import unit, write_vectors_dataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]

COUNT = 400
QUERIES = {"people": "a person", "violence": "a knife", "hate": "a strange symbol"}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    import torch

    from filtering.clip_features import load_clip_features
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_world import generate_world, write_url_list
    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import load_model_config

    root = tmp_path_factory.mktemp("demo-filters")
    cfg = SampleWorldConfig(count=COUNT, seed=5, image_size=32, max_shapes=1, people_fraction=0.3,
                            violence_fraction=0.3, hate_fraction=0.3, bad_rows=False)
    generate_world(cfg, root / "world")
    write_url_list(root / "world", "http://127.0.0.1:9", bad_rows=False)

    clip_cfg = load_model_config("tiny-clip")
    torch.manual_seed(0)
    clip = save_checkpoint(root / "clip", create_model(clip_cfg, device="cpu"), clip_cfg, step=1,
                           extra={"train": {"clip_mode": "clean"}})
    features = load_clip_features(str(clip), "cpu")
    directions = {c: features.encode_text([q]).numpy()[0] for c, q in QUERIES.items()}

    urls = pq.read_table(root / "world" / "urls.parquet").to_pylist()
    truth = {r["image_id"]: r for r in pq.read_table(root / "world" / "truth.parquet").to_pylist()}
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((COUNT, len(directions["people"]))) * 0.25
    for i, row in enumerate(urls):
        for c, d in directions.items():
            if truth[row["image_id"]][c]:
                vectors[i] += rng.uniform(0.5, 1.0) * d
    uids = [sh.compute_uid(r["url"], r["caption"]) for r in urls]
    emb, _ = write_vectors_dataset(root / "emb", unit(vectors), uids=uids, shards=2, batch_rows=64,
                                   config={"clip_model": features.describe()})
    return root, emb


def test_the_demo_filter_steps_label_fit_and_filter_a_tiny_world(tiny_world, capsys):
    from filtering.labels import LabelStore
    from pipeline.demo_filters import LabelPlan, label_fit_filter

    root, emb = tiny_world
    out = root / "out"
    out.mkdir()
    (out / "fit.yaml").write_text("fit_filters:\n  c_values: [10.0]\n  gamma_scales: [2.0]\n  cv_folds: 2\n")
    plan = LabelPlan(random={"people": 160}, searches={"hate": ("a strange symbol",)}, per_query=120, rounds=2,
                     per_round=20, round_target_fnr=0.25, target_fnr=0.25, held_out=1000, config=out / "fit.yaml")
    result = label_fit_filter(Path(emb), root / "world", out, plan)
    printed = capsys.readouterr().out

    # every step was the real command, printed before it ran
    assert printed.count("\n$ glide label next ") == 2 * 2 and printed.count("\n$ glide fit-filters ") == 3
    assert "\n$ glide label search " in printed and "--query 'a strange symbol'" in printed
    assert list(result.figures) == ["people", "hate"]
    for f in result.figures.values():
        assert f["fnr_upper_95"] <= 0.25 and f["held_out_positives"] >= 11

    with LabelStore(str(result.labels_db)) as store:
        kinds = sorted((q.filter, q.kind) for q in store.queues())
        assert kinds == sorted([("people", "random"), ("hate", "search")]
                               + [(name, "active") for name in ("people", "hate")] * 2)
        assert not store.pending()  # the ground truth answered every queued pair
        assert len(store.labels("people")) == 160 + 2 * 20

    index = json.loads((result.filters / "index.json").read_text())
    assert index["order"] == ["people", "hate"] and result.fit_report.is_file()
    counts = sh.read_manifest(str(result.filtered))["counts"]
    assert counts["input"] == COUNT == counts["kept"] + sum(counts["rejected"].values())
    assert set(counts["rejected"]) <= {"filtered_people", "filtered_hate"}
    assert result.filter_report.is_file()
    assert (out / "filters-rounds" / "round-2" / "index.json").is_file()
