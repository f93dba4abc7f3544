"""The claims stage of `glide run` on a tiny served world: the base trained on the filtered pairs and
the same recipe on the unfiltered crawl (train-base-unfiltered reads the ingest's dataset), the
stand-in detector trained and calibrated on two worlds of the sample_world section, both bases asked
for every filtered category, claims.json and the page written from what the run measured; claims
not measured say why; a rerun reuses the stage."""
from __future__ import annotations

import json

import pytest

from pipeline_run_world import served_world, write_pipeline
from test_pipeline_run import plan_of

TRAIN = {"max_steps": 2, "save_every": 2, "log_every": 1, "batch_size": 2, "workers": 1, "cpus_per_worker": 1}
CLAIMS = {"per_prompt": 1, "steps": "3", "upsample": False,
          "detector": {"train_images": 120, "holdout_images": 120, "steps": 4, "input_size": 16, "blur_size": 0,
                       "max_false_positive": 0.1}}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_the_claims_stage_compares_the_filtered_and_unfiltered_bases_and_writes_its_page(tmp_path, glide_cli, capsys):
    with served_world(tmp_path) as root:
        out = root / "out"
        run = {"out": str(out), "lists": [str(root / "urls.parquet")], "labels": str(root / "labels.csv"),
               "train": {"base": TRAIN, "base-unfiltered": TRAIN}, "claims": CLAIMS}
        config = write_pipeline(root / "pipeline.yaml", run, embed={"clip": str(root / "clip")},
                                sample_world={"image_size": 32})
        assert glide_cli("run", config) == 0
        printed = capsys.readouterr().out
    # the unfiltered base reads the crawl, the filtered one the filter's output
    assert f"$ glide train base --data {out / 'dataset'} -o {out / 'runs' / 'base-unfiltered'}" in printed
    assert f"$ glide train base --data {out / 'dataset-filtered'} -o {out / 'runs' / 'base'}" in printed
    claims_dir = out / "claims"
    data = json.loads((claims_dir / "claims.json").read_text())
    filtering = data["claims"]["filtering"]
    assert [r["category"] for r in filtering["rows"]] == ["people", "violence", "hate"]
    for row in filtering["rows"]:
        assert 0 <= row["filtered_rate"] <= 1 and 0 <= row["unfiltered_rate"] <= 1
    assert filtering["rows"][0]["held_out_positives"] is not None  # the people filter's fit beside its rate
    assert filtering["holds"] == all(c["holds"] for c in filtering["checks"]) and len(filtering["checks"]) == 6
    assert "no evaluate stage" in data["missing"]["guidance"]
    assert set(data["detector"]["categories"]) == {"people", "violence", "hate"}
    assert (claims_dir / "detector" / "standin-detector.json").is_file()
    for model in ("filtered", "unfiltered"):
        table = data["draw_tables"][model]
        assert set(data["draws"][model]) == {"people", "violence", "hate", "baseline"}
        for category, paths in data["draws"][model].items():  # the ordinary prompts' draws too
            expected = table["baseline_samples"] if category == "baseline" else table["categories"][category]["samples"]
            assert len(paths) == expected and all((claims_dir / p).is_file() for p in paths)
    page = (claims_dir / "index.html").read_text()
    assert 'id="filtering-table"' in page and "Not measured: the pipeline has no evaluate stage" in page
    assert (claims_dir / "plots" / "draw-rates.png").is_file() and (claims_dir / "grids" / "unfiltered-people.png").is_file()
    assert "claim filtering:" in printed and f"claims report: {claims_dir / 'index.html'}" in printed
    plan = plan_of(glide_cli, capsys, config)
    assert plan["claims"][0] == plan["train-base-unfiltered"][0] == "reuse"
