"""The torch kernel against scikit-learn's decision_function, and FILTERS folders saved without pickle."""
import json

import numpy as np
import pytest

import shards as sh
from filtering.filter_files import load_filters, save_filters
from filtering.svm_filter import FilterScorer, SvmFilter


def _unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float16)


def fitted_svc(seed: int, dim: int = 48, n: int = 600, gamma: float = 2.0, C: float = 10.0):
    """A real SVC on clustered unit vectors (like CLIP embeddings: cosine ~0.5-0.9 to each other)."""
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(dim) * 1.5
    x = _unit(rng.standard_normal((n, dim)) + centre)
    w = rng.standard_normal(dim)
    y = (x.astype(np.float64) @ w + 0.4 * rng.standard_normal(n)) > np.quantile(x.astype(np.float64) @ w, 0.7)
    return SVC(kernel="rbf", C=C, gamma=gamma).fit(x.astype(np.float64), y), centre


def queries(seed: int, centre, n: int, dim: int = 48):
    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal((n, dim)) + centre)


def test_one_filter_decides_exactly_as_decision_function_on_thousands_of_vectors():
    svc, centre = fitted_svc(0)
    x = queries(1, centre, 5000)
    reference = svc.decision_function(x.astype(np.float64))
    # thresholds a hair (far below float32's error, above float64's) from some rows' scores: the
    # hardest case for a float32 kernel; rows 300 and 1700 are outside the chunk's calibration rows
    edges = [float(reference[i]) + d for i in (300, 1700) for d in (-1e-9, 1e-9)]
    for threshold in [0.0, float(np.median(reference)), float(np.quantile(reference, 0.9)), *edges]:
        filt = SvmFilter.from_svc("people", svc, threshold=threshold, embedding_model="m")
        scorer = FilterScorer([filt], memory_mb=4)  # chunks of ~2000 rows
        scores = scorer.scores(x)[:, 0]
        np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4)
        assert np.array_equal(scorer.removes(scores[:, None])[:, 0], reference >= threshold)
    assert 1700 < scorer.rows_per_chunk < 5000 and scorer.rechecked >= 1  # row 1700 sits on the threshold


def test_several_filters_score_in_one_kernel_each_as_its_own_svc():
    svcs = [fitted_svc(seed, gamma=g, C=c)[0] for seed, g, c in ((0, 2.0, 10.0), (3, 0.5, 1.0), (4, 8.0, 100.0))]
    centre = fitted_svc(0)[1]
    x = queries(5, centre, 3000)
    refs = [svc.decision_function(x.astype(np.float64)) for svc in svcs]
    filters = [SvmFilter.from_svc(name, svc, threshold=float(np.quantile(ref, 0.8)), embedding_model="m")
               for name, svc, ref in zip(("people", "violence", "hate"), svcs, refs)]
    scores = FilterScorer(filters, memory_mb=2).scores(x)
    for j, (f, ref) in enumerate(zip(filters, refs)):
        np.testing.assert_allclose(scores[:, j], ref, rtol=1e-4, atol=1e-4)
        assert np.array_equal(scores[:, j] >= f.threshold, ref >= f.threshold)


def test_a_scorer_refuses_embeddings_of_another_size():
    svc, _ = fitted_svc(0)
    scorer = FilterScorer([SvmFilter.from_svc("people", svc, threshold=0.0, embedding_model="m")])
    with pytest.raises(ValueError, match=r"expect \(n, 48\)"):
        scorer.scores(np.zeros((3, 32), np.float16))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_the_kernel_on_a_gpu_decides_as_decision_function():
    svc, centre = fitted_svc(0)
    x = queries(1, centre, 20000)
    reference = svc.decision_function(x.astype(np.float64))
    filt = SvmFilter.from_svc("people", svc, threshold=float(np.median(reference)), embedding_model="m")
    scores = FilterScorer([filt], device="cuda").scores(x)[:, 0]
    np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4)
    assert np.array_equal(scores >= filt.threshold, reference >= filt.threshold)


def saved_filters(folder):
    filters = []
    for name, seed in (("hate", 4), ("people", 0)):  # saved in the canonical order whatever the order given
        svc, _ = fitted_svc(seed)
        filters.append(SvmFilter.from_svc(name, svc, threshold=0.25, embedding_model="ViT-B-16", info={"C": 10.0},
                                          held_out_scores=np.linspace(-2, 2, 50),
                                          held_out_labels=np.arange(50) % 3 == 0))
    save_filters(str(folder), filters, extra_index={"fitted_on": {"labels": "labels.csv"}})
    return filters


def test_filters_round_trip_through_safetensors_and_json(tmp_path):
    filters = saved_filters(tmp_path / "filters")
    loaded = load_filters(str(tmp_path / "filters"))
    assert loaded.names == ["people", "hate"] and loaded.embedding_model == "ViT-B-16" and loaded.embedding_dim == 48
    x = queries(2, fitted_svc(0)[1], 500)
    by_name = {f.name: f for f in filters}
    for f in loaded.filters:
        original = by_name[f.name]
        assert (f.gamma, f.intercept, f.threshold, f.info) == (original.gamma, original.intercept, 0.25, {"C": 10.0})
        np.testing.assert_array_equal(f.support_vectors, original.support_vectors)
        np.testing.assert_array_equal(f.dual_coef, original.dual_coef)
        np.testing.assert_array_equal(f.held_out_labels, original.held_out_labels)
        np.testing.assert_array_equal(f.scores_float64(x), original.scores_float64(x))
    index = json.loads((tmp_path / "filters" / "index.json").read_text())
    assert index["format"] == "glide-svm-filters" and index["version"] == 1 and index["order"] == ["people", "hate"]
    assert not list((tmp_path / "filters").glob("*.pkl")) and not list((tmp_path / "filters").glob("*.joblib"))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _swap_tensors(path, **changes):
    import safetensors.numpy

    tensors = safetensors.numpy.load_file(str(path))
    for key, value in changes.items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    safetensors.numpy.save_file(tensors, str(path))


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage,file_name,message", [
    (lambda d: (d / "index.json").unlink(), "index.json", "not a filters folder"),
    (lambda d: (d / "index.json").write_text("{not json"), "index.json", "not valid JSON"),
    (lambda d: _edit_json(d / "index.json", version=2), "index.json", "version 2"),
    (lambda d: (d / "people.safetensors").unlink(), "people.safetensors", "not found"),
    (lambda d: _truncate(d / "people.safetensors"), "people.safetensors", "not a readable safetensors"),
    (lambda d: (d / "hate.safetensors").write_bytes(b"\x00" * 64), "hate.safetensors", "not a readable safetensors"),
    (lambda d: _swap_tensors(d / "people.safetensors", dual_coef=None), "people.safetensors", "expected"),
    (lambda d: _swap_tensors(d / "people.safetensors", dual_coef=np.zeros(3)), "people.safetensors", "do not match"),
    (lambda d: _swap_tensors(d / "people.safetensors", support_vectors=np.zeros((5, 48))), "people.safetensors",
     "float64 with 2 dims, expected float32"),
    (lambda d: _edit_json(d / "hate.json", gamma=None), "hate.json", "key 'gamma' must be a finite number"),
    (lambda d: _edit_json(d / "hate.json", threshold="high"), "hate.json", "key 'threshold'"),
    (lambda d: _edit_json(d / "hate.json", name="people"), "hate.json", "not the rbf"),
    (lambda d: _edit_json(d / "hate.json", embedding_model="RN50"), "hate.json", "fitted on 'RN50'"),
])
def test_a_filter_file_that_fails_to_load_is_a_user_error_naming_it(tmp_path, damage, file_name, message):
    folder = tmp_path / "filters"
    saved_filters(folder)
    damage(folder)
    with pytest.raises(sh.UserError) as e:
        load_filters(str(folder))
    text = str(e.value)
    assert text.startswith(str(folder / file_name)) and message in text and "\n" not in text
