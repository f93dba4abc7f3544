"""End to end through the real CLI and Ray: `glide fit-filters` then `glide filter` on a synthetic
embeddings dataset whose categories are separable, but not trivially (tests/filter_world.py)."""
import json

import pytest

import shards as sh
from conftest import run_glide
from filter_world import CATEGORIES, write_embeddings_dataset, write_labels_csv
from filtering.filter_files import load_filters
from filtering.svm_filter import FilterScorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The dataset, its labels, and FILTERS fitted by the CLI (its --json output kept)."""
    root = tmp_path_factory.mktemp("filter")
    dataset, uids, truth = write_embeddings_dataset(root / "emb", 2400, shards=3)
    labels = write_labels_csv(root / "labels.csv", uids, truth, count=900)
    fit = run_glide("fit-filters", "--labels", labels, "--embeddings", dataset, "-o", root / "filters",
                    "--target-fnr", "0.05", "--held-out", "400", "--json")
    assert fit.returncode == 0, fit.stderr
    return root, dataset, truth, fit


def test_fit_filters_prints_each_filters_figures_as_its_last_json_line(world):
    root, _, _, fit = world
    figures = json.loads(fit.stdout.strip().splitlines()[-1])["filters"]
    assert list(figures) == list(CATEGORIES)
    for f in figures.values():
        assert set(f) == {"fnr", "fnr_upper_95", "held_out_positives", "threshold", "removed_fraction"}
        assert f["fnr_upper_95"] <= 0.05 and f["held_out_positives"] >= 59 and 0.1 < f["removed_fraction"] < 0.5
    assert "FNR 95% bound" in fit.stdout  # the readable table comes first
    assert (root / "filters" / "report" / "index.html").is_file()


@pytest.fixture(scope="module")
def filtered(world):
    """`glide filter` of the world's dataset with its filters: (DATASET_FILTERED, the run)."""
    root, dataset, _, _ = world
    out = root / "filtered"
    return out, run_glide("filter", dataset, "--filters", root / "filters", "-o", out)


def test_filter_keeps_scored_pairs_and_rejects_the_rest_naming_the_first_filter_that_fires(world, filtered):
    root, dataset, truth, _ = world
    out, run = filtered
    assert run.returncode == 0, run.stderr
    filters = load_filters(str(root / "filters")).filters
    thresholds = {f.name: f.threshold for f in filters}

    manifest = sh.read_manifest(str(out))
    counts = manifest["counts"]
    assert counts["input"] == 2400 == counts["kept"] + sum(counts["rejected"].values())
    assert set(counts["rejected"]) == {f"filtered_{n}" for n in CATEGORIES}
    assert manifest["inputs"][0]["path"] == dataset and manifest["filters"]["order"] == list(CATEGORIES)

    kept = sh.read_table(sh.list_shards(str(out))[0])
    kept_all = [sh.read_table(p) for p in sh.list_shards(str(out))]
    assert kept.schema.names[-3:] == [f"score_{n}" for n in CATEGORIES]
    for table in kept_all:
        for n in CATEGORIES:
            assert (table.column(f"score_{n}").to_numpy() < thresholds[n]).all()
    rejects = [r for p in sh.list_shards(str(out), sh.REJECTS_DIR) for r in sh.read_table(p).to_pylist()]
    assert len(rejects) == sum(counts["rejected"].values())

    # every decision and score against the kernel run here on the input
    scorer = FilterScorer(filters)
    by_uid = {}
    for batch in sh.iter_record_batches(dataset, ["uid", "clip_embedding"]):
        scores = scorer.scores(batch.column("clip_embedding").flatten().to_numpy().reshape(-1, 32))
        by_uid.update(zip(batch.column("uid").to_pylist(), scores))
    fired_total = {n: 0 for n in CATEGORIES}
    for r in rejects:
        scores = by_uid[r["uid"]]
        fired = [n for j, n in enumerate(CATEGORIES) if scores[j] >= thresholds[n]]
        assert fired and r["reason"] == f"filtered_{fired[0]}" and r["stage"] == "filter"
        assert r["score"] == pytest.approx(scores[CATEGORIES.index(fired[0])], abs=1e-5)
        assert [part.split()[0] for part in r["detail"].removeprefix("fired: ").split(", ")] == fired
        for n in fired:
            fired_total[n] += 1
    assert manifest["extra_counts"] == {f"fired_{n}": fired_total[n] for n in CATEGORIES}
    for table in kept_all:
        for uid, score in zip(table.column("uid").to_pylist(), table.column("score_people").to_pylist()):
            assert score == pytest.approx(by_uid[uid][0], abs=1e-5)

    report = (out / "report" / "index.html").read_text()
    assert "removed with this filter as the first to fire" in report and "&lt;b&gt;#" in report
    assert (out / "report" / "people_roc.png").is_file() and list((out / "report" / "thumbs").glob("*.jpg"))

    again = run_glide("filter", dataset, "--filters", root / "filters", "-o", out)
    assert again.returncode == 0 and "3 reused" in again.stdout
    assert sh.read_manifest(str(out))["counts"] == counts


def test_filters_fitted_on_other_embeddings_are_refused_naming_the_dataset(world, tmp_path, glide_cli, capsys):
    """In-process: refused before Ray starts (the next test checks the exit code in a real process)."""
    root, _, _, _ = world
    other, _, _ = write_embeddings_dataset(tmp_path / "emb16", 20, dim=16, shards=1, images=False)
    assert glide_cli("filter", other, "--filters", root / "filters", "-o", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == (f"glide: error: {other}: embeddings have 16 values; the filters in "
                                               f"{root / 'filters'} were fitted on 32")
    renamed, _, _ = write_embeddings_dataset(tmp_path / "emb-rn50", 20, shards=1, images=False, model="RN50")
    assert glide_cli("filter", renamed, "--filters", root / "filters", "-o", tmp_path / "out") == 2
    assert "embedded with 'RN50'; the filters" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_damaged_filters_folder_is_a_one_line_error_naming_the_file(world, tmp_path):
    import shutil

    root, dataset, _, _ = world
    damaged = tmp_path / "filters"
    shutil.copytree(root / "filters", damaged)
    data = (damaged / "violence.safetensors").read_bytes()
    (damaged / "violence.safetensors").write_bytes(data[:100])
    run = run_glide("filter", dataset, "--filters", damaged, "-o", tmp_path / "out")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"glide: error: {damaged / 'violence.safetensors'}: not a readable safetensors")


@pytest.mark.timeout(900)
def test_glide_train_takes_the_filtered_dataset_as_it_is(world, filtered, tmp_path):
    """The filtered shards carry clip_embedding and score_<filter> columns and a filter-stage manifest
    (its shards only the kept pairs): `glide train` reads them as they are, and trains on the kept pairs."""
    from train_world import micro_config

    out, run = filtered
    assert run.returncode == 0, run.stderr
    manifest = sh.read_manifest(str(out))
    assert manifest["stage"] == "filter"
    names = sh.read_schema(sh.list_shards(str(out))[0]).names
    assert "clip_embedding" in names and [n for n in names if n.startswith("score_")] == \
        [f"score_{n}" for n in CATEGORIES]
    train = run_glide("train", "base", "--data", out, "-o", tmp_path / "run",
                      "--model-config", micro_config(tmp_path / "micro-base.json"), "--workers", 1,
                      "--batch-size", 4, "--max-steps", 2, "--save-every", 2, "--log-every", 1, timeout=800)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "run" / "exports" / "step-0000002").is_dir()
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r][-1] == 2
