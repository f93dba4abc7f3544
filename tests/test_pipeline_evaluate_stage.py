"""`glide run`'s evaluate stage and `make demo`'s end summary.

A tiny served world through ingest -> embed -> fit-filters -> filter -> train-base -> sample -> evaluate
(`glide evaluate` of the trained base at guidance 1 and 3, prompts and reference images from a held-out
world made from the pipeline's sample_world section): the report is written, a rerun reuses every
stage, and a guidance scale added reruns only evaluate, which samples only the new setting (the report
folder's sample cache). Then `python -m pipeline.demo_summary` on that output folder, and the demo's
own configs planned through `glide run --dry-run`.
"""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO
from pipeline_run_world import served_world, write_pipeline

SCENE = REPO / "checkpoints" / "demo" / "scene-classifier"
ALL = ["ingest", "embed", "fit-filters", "filter", "train-base", "sample", "evaluate"]
TRAIN = {"max_steps": 2, "save_every": 2, "log_every": 1, "batch_size": 2, "workers": 1, "cpus_per_worker": 1}
SAMPLE = {"prompts": ["a red circle on a blue background"], "per_prompt": 1, "steps": "4"}
EVALUATE = {"guidance": [1, 3], "samples_per_setting": 4, "batch_size": 4, "steps": "4", "held_out": {"images": 24}}


def plan_of(glide_cli, capsys, config) -> dict:
    """{stage: (action, why)} from `glide run CONFIG --dry-run --json`."""
    capsys.readouterr()
    assert glide_cli("run", config, "--dry-run", "--json") == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    return {name: (s["action"], s["why"]) for name, s in stages.items()}


def write(config, run, evaluate):
    scene = config.parent / "scene-classifier"  # a copy of the shipped one: the test changes it
    evaluate = {"features": f"scene:{scene}", "scene_classifier": str(scene), **evaluate}
    return write_pipeline(config, {"train": {"base": TRAIN}, **run, "sample": SAMPLE, "evaluate": evaluate},
                          embed={"clip": str(config.parent / "clip")},
                          sample_world={"image_size": 32, "max_shapes": 1})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The pipeline run once (guidance 1 and 3); yields (root, out, run section, config file)."""
    import shutil

    from pipeline.cli import main

    with served_world(tmp_path_factory.mktemp("evaluate-stage")) as root:
        shutil.copytree(SCENE, root / "scene-classifier")
        out = root / "out"
        run = {"out": str(out), "lists": [str(root / "urls.parquet")], "labels": str(root / "labels.csv")}
        config = write(root / "pipeline.yaml", run, EVALUATE)
        assert main(["run", str(config)]) == 0
        yield root, out, run, config


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_the_evaluate_stage_reports_both_settings_is_reused_and_samples_only_a_new_scale(evaluated, glide_cli,
                                                                                         capsys):
    root, out, run, config = evaluated
    report = out / "evaluation"
    assert (report / "index.html").is_file()
    metrics = json.loads((report / "metrics.json").read_text())["settings"]
    assert sorted(metrics) == ["guidance-1", "guidance-3"]
    for m in metrics.values():  # the shipped scene classifier read the held-out world's captions
        assert m["caption_accuracy"]["samples"] == 4 and 0 <= m["caption_accuracy"]["all"] <= 1
    lineage = json.loads((report / "lineage.json").read_text())
    assert lineage["model"]["path"] == str(out / "runs" / "base")          # the base this pipeline trained
    assert lineage["prompts"]["path"] == str(out / "evaluation-world" / "prompts.txt")
    assert lineage["prompts"]["count"] == 4 and lineage["prompts"]["sample_world"]
    assert lineage["sampled"] == 8

    plan = plan_of(glide_cli, capsys, config)
    assert [plan[s][0] for s in ALL] == ["reuse"] * len(ALL)

    # a guidance scale added: only evaluate reruns, and it samples only the new setting's 4 images
    write(config, run, {**EVALUATE, "guidance": [1, 2, 3]})
    plan = plan_of(glide_cli, capsys, config)
    assert [plan[s][0] for s in ALL] == ["reuse"] * 6 + ["run"]
    assert plan["evaluate"][1] == "config changed: evaluate.guidance"
    assert glide_cli("run", config) == 0
    printed = capsys.readouterr()
    assert "$ glide evaluate --model " in printed.out
    assert "8 cached, 4 to sample" in printed.err
    assert json.loads((report / "lineage.json").read_text())["sampled"] == 4
    assert sorted(json.loads((report / "metrics.json").read_text())["settings"]) == \
        ["guidance-1", "guidance-2", "guidance-3"]
    plan = plan_of(glide_cli, capsys, config)
    assert [plan[s][0] for s in ALL] == ["reuse"] * len(ALL)

    # the scene classifier (also the features' network) is an outside input: changed in place, evaluate reruns
    (root / "scene-classifier" / "notes.txt").write_text("retrained\n")
    assert plan_of(glide_cli, capsys, config)["evaluate"] == ("run", "input changed: features, scene_classifier")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_claims_stage_measures_clip_guidance_inpainting_and_fewer_steps(evaluated, glide_cli, capsys):
    """Claim 2: train-clip trains a noised CLIP on the filtered pairs, the evaluate stage adds a CLIP-guided
    setting scored by another (clean) CLIP. Claim 4: train-inpaint fine-tunes the pipeline's base for
    inpainting; it and the base in replacement mode fill the same masks. Claim 5: one `glide evaluate`
    per base sampler at the claims' guidance, on the evaluate stage's prompts and reference. Their
    tables, checks and the page."""
    root, out, run, config = evaluated
    clip_train = {**TRAIN, "model": "tiny-clip", "batch_size": 4}
    claims = {"guidance": 3, "fewer_steps": {"base": ["4", "ddim2"], "samples": 2},
              "inpainting": {"images": 3, "steps": "3"}}
    evaluate = {**EVALUATE, "clip_guidance": [2], "score_clip": str(root / "clip")}
    write(config, {**run, "train": {"base": TRAIN, "clip": clip_train, "inpaint": TRAIN}, "claims": claims}, evaluate)
    assert glide_cli("run", config) == 0
    printed = capsys.readouterr().out
    assert f"$ glide train clip --data {out / 'dataset-filtered'} -o {out / 'runs' / 'clip'}" in printed
    assert (f"$ glide train base-inpaint --data {out / 'dataset-filtered'} --init {out / 'runs' / 'base'} "
            f"-o {out / 'runs' / 'inpaint'}") in printed
    assert f"--clip-guidance 2 --clip {out / 'runs' / 'clip'} -o {out / 'evaluation'}" in printed
    data = json.loads((out / "claims" / "claims.json").read_text())

    clip_claim = data["claims"]["clip_guidance"]
    assert {r["setting"] for r in clip_claim["rows"]} >= {"guidance-1", "guidance-3", "guidance-1-clip-2"}
    assert all(r["clip_score"] is not None for r in clip_claim["rows"])   # scored by the clean CLIP
    assert len(clip_claim["checks"]) == 2 and clip_claim["compared"][1] == "guidance-1-clip-2"
    assert json.loads((out / "evaluation" / "settings.json").read_text())["guidance-1-clip-2"]["clip"] == \
        str(out / "runs" / "clip")

    prompts = out / "evaluation-world" / "prompts.txt"
    assert f"--prompts {prompts} --reference {out / 'evaluation-world' / 'world' / 'images'} --guidance 3" in printed
    claim = data["claims"]["fewer_steps"]
    assert [(r["stage"], r["steps"], r["sampler"], r["reference"], r["samples"]) for r in claim["rows"]] == [
        ("base", "4", "ddpm", True, 2), ("base", "ddim2", "ddim", False, 2)]
    for row in claim["rows"]:
        assert row["fid"] is not None and 0 <= row["all_attributes"] <= 1 and row["seconds_per_sample"] > 0
    assert [c["check"] for c in claim["checks"]] == ["base: ddim2 (ddim) against 4: caption accuracy at most 0.05 lower",
                                                     "base: ddim2 (ddim) against 4: FID at most 1.2x"]
    lineage = json.loads((out / "claims" / "fewer-steps" / "base-ddim2" / "lineage.json").read_text())
    assert lineage["sampler"]["steps"] == "ddim2" and lineage["prompts"]["path"] == str(prompts)
    assert "trains no unfiltered base" in data["missing"]["filtering"]
    assert set(data["missing"]) == {"filtering"}

    inpainting = data["claims"]["inpainting"]
    assert [r["mode"] for r in inpainting["rows"]] == ["finetuned", "replace"] and len(inpainting["checks"]) == 1
    for row in inpainting["rows"]:
        assert row["seam"] >= 0 and row["samples"] == 3 and 0 <= row["all"] <= 1   # the scene classifier read them
    for key in ("masked", "finetuned", "replace"):
        assert len(data["inpainting"]["images"][key]) == 3
        assert all((out / "claims" / p).is_file() for p in data["inpainting"]["images"][key])
    assert all(" on a" in p for p in data["inpainting"]["prompts"])
    page = (out / "claims" / "index.html").read_text()
    assert 'id="fewer-steps-table"' in page and 'id="clip-guidance-table"' in page and 'id="inpainting-table"' in page
    assert (out / "claims" / "grids" / "inpainting-replace.png").is_file()
    # claim 1's grids: the evaluate report's samples, the same prompts and seeds at every scale
    samples = data["guidance_samples"]
    assert set(samples["settings"]) == {"guidance-1", "guidance-3", "guidance-1-clip-2"}
    assert len({len(paths) for paths in samples["settings"].values()}) == 1 and samples["prompts"]
    assert all((out / "claims" / p).is_file() for paths in samples["settings"].values() for p in paths)
    assert 'src="grids/guidance-guidance-3.png"' in page and 'id="guidance-prompts"' in page
    assert samples["prompts"][0]["prompt"] in page
    assert (out / "claims" / "plots" / "fewer-steps.png").is_file() and (out / "claims" / "plots" / "clip-guidance.png").is_file()
    assert "claim fewer_steps: " in printed and "claim clip_guidance: " in printed and "claim inpainting: " in printed


@pytest.mark.slow
@pytest.mark.integration
def test_the_summary_prints_the_filter_figures_and_the_evaluation_of_a_run(evaluated, capsys):
    from pipeline.demo_summary import main

    root, out, run, config = evaluated
    capsys.readouterr()
    assert main([str(out)]) == 0
    printed = capsys.readouterr().out
    people = json.loads((out / "filters" / "people.json").read_text())["info"]
    assert (f"people     FNR {people['fnr']:.2%} (95% bound {people['fnr_upper_95']:.2%} on "
            f"{people['held_out_positives']} held-out positives), removes {people['removed_fraction']:.1%}") in printed
    assert f"glide filter OTHER_EMB --filters {out / 'filters'} -o OTHER_FILTERED" in printed
    assert f"evaluation:       {out / 'evaluation'}/index.html" in printed
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())["settings"]
    for name, m in metrics.items():
        assert f"evaluation {name}: caption accuracy {100 * m['caption_accuracy']['all']:.1f}%" in printed
    assert "captioned colours (final): background " in printed and "/1, shape " in printed


def test_the_summary_names_a_missing_folder_in_one_line(tmp_path, capsys):
    from pipeline.demo_summary import main

    assert main([str(tmp_path / "no-output")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'no-output'}: no such folder" in err[0], err

    (tmp_path / "out" / "pipeline-state").mkdir(parents=True)
    (tmp_path / "out" / "pipeline-state" / "label.json").write_text(json.dumps(
        {"stage": "label", "status": "finished", "time": "t", "config": {}, "inputs": {}, "seconds": 1.0,
         "outputs": {"filters": {"path": str(tmp_path / "out" / "filters"), "digest": "x"}}}))
    assert main([str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'out' / 'filters'}: no such filters folder" in err[0], err


def test_the_demo_pipelines_plan_every_stage_through_evaluate(tmp_path, glide_cli, capsys, monkeypatch):
    from pipeline.demo import DEMO_CONFIG, from_scratch_config

    monkeypatch.chdir(REPO)  # the demo configs name the shipped checkpoints relative to the checkout
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    demo["run"]["out"] = str(tmp_path / "demo")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(demo))
    plan = plan_of(glide_cli, capsys, tmp_path / "demo.yaml")
    assert list(plan) == ["ingest", "embed", "label", "train-base", "sample", "evaluate"]
    assert demo["run"]["evaluate"]["guidance"] == [1, 3] and demo["run"]["evaluate"]["samples_per_setting"] == 64

    scratch = from_scratch_config(tmp_path / "scratch", tmp_path / "scratch" / "runs" / "clip", max_steps=5)
    plan = plan_of(glide_cli, capsys, scratch)
    assert list(plan) == ["ingest", "embed", "label", "train-base", "train-upsampler", "sample", "evaluate"]
    written = yaml.safe_load(scratch.read_text())
    assert written["run"]["train"] == {"base": {"max_steps": 5}, "upsampler": {"max_steps": 5}}
    assert "upsampler" not in written["run"]["sample"]  # sample and evaluate use the trained upsampler
