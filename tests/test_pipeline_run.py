"""`glide run PIPELINE.yaml` on a tiny served world: ingest -> embed -> fit-filters -> filter, each stage the
real command; a rerun reuses every stage; a changed config or input reruns that stage and every later one,
never one before; --from, --until and --dry-run; bad configs are one-line errors naming key and file."""
from __future__ import annotations

import json
import shutil

import pytest

import shards as sh
from pipeline_run_world import served_world, uids, write_pipeline

STAGES = ["ingest", "embed", "fit-filters", "filter"]


def plan_of(glide_cli, capsys, config, *flags) -> dict:
    """{stage: (action, why)} from `glide run CONFIG --dry-run --json`."""
    capsys.readouterr()
    assert glide_cli("run", config, "--dry-run", "--json", *flags) == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    return {name: (s["action"], s["why"]) for name, s in stages.items()}


def actions(plan: dict) -> list[str]:
    return [plan[s][0] for s in STAGES]


@pytest.mark.parametrize("run,message", [
    ({"stagez": ["ingest"]}, "run.stagez"),
    ({"stages": ["ingest", "evaluat"]}, "unknown stage 'evaluat'"),
    ({"train": {"base": {"max_stepz": 3}}}, "run.train.base: unknown config key 'max_stepz'"),
    ({"train": {"base": {"max_steps": "many"}}}, "max_steps"),
    ({"stages": ["embed"]}, "embed reads pairs, which no stage before it writes"),
    ({"evaluate": {"features": "scene:clf", "guidanse": [1]}}, "run.evaluate.guidanse"),
    ({"evaluate": {"guidance": [1]}}, "run.evaluate.features"),
    ({"stages": ["ingest", "evaluate"], "evaluate": {"features": "scene:clf"}},
     "evaluate reads model-base, which no stage before it writes"),
    ({"claims": {"fewer_steps": {"base": ["250", "ddim2x"]}}}, "'run.claims.fewer_steps.base': bad respacing 'ddim2x'"),
    ({"claims": {"fewer_steps": {"upsampler": ["fast27", "fast27"]}}}, "a sampler is listed twice"),
    ({"evaluate": {"features": "scene:clf", "clip_guidance": [2]}}, "evaluate.clip_guidance needs a noised CLIP"),
    ({"train": {"inpaintt": {}}}, "run.train.inpaintt"),
])
def test_a_bad_pipeline_config_is_one_line_naming_the_key_and_file(tmp_path, capsys, glide_cli, run, message):
    config = write_pipeline(tmp_path / "p.yaml", {"out": str(tmp_path / "out"), "lists": ["urls.parquet"],
                                                  "labels": "labels.csv", **run})
    capsys.readouterr()
    assert glide_cli("run", config, "--dry-run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(config) in err[0] and message in err[0], err


def test_from_and_until_must_name_stages_of_the_pipeline(tmp_path, capsys, glide_cli):
    config = write_pipeline(tmp_path / "p.yaml", {"out": str(tmp_path / "out"), "lists": ["u.parquet"],
                                                  "labels": "l.csv"})
    assert glide_cli("run", config, "--dry-run", "--until", "train-base") == 2
    assert "--until train-base: not a stage of" in capsys.readouterr().err
    assert glide_cli("run", config, "--dry-run", "--from", "filter", "--until", "embed") == 2
    assert "--from filter comes after --until embed" in capsys.readouterr().err
    # --from a later stage needs the earlier stages' outputs
    assert glide_cli("run", config, "--dry-run", "--from", "embed") == 2
    assert "ingest's output" in capsys.readouterr().err


def test_quick_plans_the_reduced_run_in_its_own_folder(tmp_path, capsys, glide_cli):
    out, quick_out = tmp_path / "out", tmp_path / "quick-out"
    config = write_pipeline(tmp_path / "p.yaml", {"out": str(out), "lists": ["u.parquet"], "labels": "l.csv"},
                            quick={"run": {"out": str(quick_out)}, "ingest": {"shard_size": 7}})
    capsys.readouterr()
    assert glide_cli("run", config, "--quick", "--dry-run", "--json") == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    assert all(path.startswith(str(quick_out)) for s in stages.values() for path in s["outputs"].values())
    assert not quick_out.exists()  # a dry run writes nothing
    assert glide_cli("run", config, "--dry-run", "--json") == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    assert all(path.startswith(str(out) + "/") for s in stages.values() for path in s["outputs"].values())
    assert glide_cli("run", config, "--quick", "--out", tmp_path / "elsewhere", "--dry-run", "--json") == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    assert all(path.startswith(str(tmp_path / "elsewhere") + "/") for s in stages.values() for path in s["outputs"].values())
    plain = write_pipeline(tmp_path / "plain.yaml", {"out": str(out), "lists": ["u.parquet"], "labels": "l.csv"})
    assert glide_cli("run", plain, "--quick", "--dry-run") == 2
    assert "has no quick section" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.integration
def test_a_quick_run_runs_its_stages_with_the_merged_config(tmp_path, glide_cli, capsys):
    """The stages' commands read the quick section too: ingest's shard size comes from it."""
    with served_world(tmp_path) as root:
        quick_out = root / "quick-out"
        config = write_pipeline(root / "p.yaml", {"out": str(root / "out"), "lists": [str(root / "urls.parquet")],
                                                  "labels": str(root / "labels.csv")},
                                quick={"run": {"out": str(quick_out)}, "ingest": {"shard_size": 7}})
        capsys.readouterr()
        assert glide_cli("run", config, "--quick", "--until", "ingest") == 0
        printed = capsys.readouterr().out
    merged = quick_out / "quick-config.yaml"
    assert f"--config {merged}" in printed and "shard_size: 7" in merged.read_text()
    manifest = sh.read_manifest(str(quick_out / "dataset"))
    assert max(s["rows"] for s in manifest["shards"]) == 7
    assert not (root / "out").exists()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with served_world(tmp_path_factory.mktemp("pipeline-run")) as root:
        out = root / "out"
        run = {"out": str(out), "lists": [str(root / "urls.parquet")], "labels": str(root / "labels.csv")}
        yield root, out, run, write_pipeline(root / "pipeline.yaml", run, embed={"clip": str(root / "clip")})


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_pipeline_runs_then_reuses_and_reruns_only_what_changed(pipeline, glide_cli, capsys):
    root, out, run, config = pipeline
    assert glide_cli("run", config) == 0
    printed = capsys.readouterr().out
    for command in ("$ glide ingest", "$ glide embed", "$ glide fit-filters", "$ glide filter"):
        assert command in printed  # every stage is the real command, printed before it runs
    dataset, emb, filtered = (str(out / n) for n in ("dataset", "dataset-emb", "dataset-filtered"))
    # each stage's output is the next one's input, as its manifest says
    assert sh.read_manifest(emb)["inputs"] == [sh.input_ref(dataset)]
    assert sh.read_manifest(filtered)["inputs"] == [sh.input_ref(emb)]
    assert sh.read_manifest(filtered)["config"]["filters"] == str(out / "filters")
    counts = sh.read_manifest(filtered)["counts"]
    assert counts["input"] == sh.read_manifest(emb)["counts"]["kept"] == len(uids(emb))
    assert sorted(uids(filtered) + uids(filtered, sh.REJECTS_DIR)) == sorted(uids(emb))

    # the same config and inputs: nothing runs (and no Ray starts)
    assert glide_cli("run", config) == 0
    assert "nothing to run" in capsys.readouterr().out
    digests = {d: sh.manifest_digest(d) for d in (dataset, emb, filtered)}

    # a knob that decides only speed is not a change
    write_pipeline(config, run, embed={"clip": str(root / "clip"), "batch_size": 3, "workers": 1})
    assert actions(plan_of(glide_cli, capsys, config)) == ["reuse"] * 4

    # the filter's config changed: only filter reruns
    write_pipeline(config, run, embed={"clip": str(root / "clip")}, filter={"report_examples": 4})
    plan = plan_of(glide_cli, capsys, config)
    assert actions(plan) == ["reuse", "reuse", "reuse", "run"]
    assert plan["filter"][1] == "config changed: filter.report_examples"
    assert glide_cli("run", config) == 0
    capsys.readouterr()
    assert sh.manifest_digest(dataset) == digests[dataset] and sh.manifest_digest(emb) == digests[emb]
    assert sh.manifest_digest(filtered) != digests[filtered]
    assert sh.read_manifest(filtered)["config"]["report_examples"] == 4

    # the labels changed: fit-filters and everything after it, never the stages before
    labels = root / "labels.csv"
    kept = labels.read_text().splitlines()
    labels.write_text("\n".join(kept[:-3]) + "\n")
    plan = plan_of(glide_cli, capsys, config)
    assert actions(plan) == ["reuse", "reuse", "run", "run"]
    assert plan["fit-filters"][1] == "input changed: labels" and plan["filter"][1] == "fit-filters runs before it"
    labels.write_text("\n".join(kept) + "\n")  # back as recorded: reused again
    assert actions(plan_of(glide_cli, capsys, config)) == ["reuse"] * 4

    # --from reruns a stage and the later ones; --until stops the plan
    assert actions(plan_of(glide_cli, capsys, config, "--from", "embed")) == ["reuse", "run", "run", "run"]
    plan = plan_of(glide_cli, capsys, config, "--from", "embed", "--until", "embed")
    assert actions(plan) == ["reuse", "run", "not run", "not run"] and plan["filter"][1] == "after --until embed"

    # an output changed behind the pipeline's back: that stage and the later ones rerun
    shutil.copy(sh.join(emb, "manifest.json"), root / "emb-manifest.json")
    (out / "dataset-emb" / "manifest.json").unlink()
    plan = plan_of(glide_cli, capsys, config)
    assert actions(plan) == ["reuse", "run", "run", "run"]
    assert plan["embed"][1] == f"its embeddings at {emb} changed or is gone since it was recorded"
    shutil.copy(root / "emb-manifest.json", sh.join(emb, "manifest.json"))
    assert actions(plan_of(glide_cli, capsys, config)) == ["reuse"] * 4


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_training_and_sampling_stages_follow_the_filtered_data_and_restart_when_their_config_changes(
        pipeline, glide_cli, capsys):
    root, out, run, config = pipeline
    train = {"max_steps": 2, "save_every": 2, "log_every": 1, "batch_size": 2, "workers": 1, "cpus_per_worker": 1}
    sample = {"prompts": ["a red circle on a blue background"], "per_prompt": 1, "steps": "4"}
    write_pipeline(config, {**run, "train": {"base": train}, "sample": sample}, embed={"clip": str(root / "clip")})
    assert glide_cli("run", config) == 0
    printed = capsys.readouterr().out
    # the model trains on the filtered dataset (the newest pairs), then samples
    assert f"$ glide train base --data {out / 'dataset-filtered'} -o {out / 'runs' / 'base'}" in printed
    assert (out / "runs" / "base" / "exports" / "step-0000002").is_dir() and (out / "samples" / "grid.png").is_file()
    assert actions(plan := plan_of(glide_cli, capsys, config)) == ["reuse"] * 4
    assert plan["train-base"][0] == plan["sample"][0] == "reuse"

    # another length: a fresh run (not a resume at its last step), and new samples
    write_pipeline(config, {**run, "train": {"base": {**train, "max_steps": 3, "save_every": 3}}, "sample": sample},
                   embed={"clip": str(root / "clip")})
    plan = plan_of(glide_cli, capsys, config)
    assert plan["train-base"] == ("run", "config changed: train.max_steps, train.save_every")
    assert plan["sample"] == ("run", "train-base runs before it")
    assert glide_cli("run", config) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "runs" / "base" / "exports").iterdir()) == ["step-0000003"]

    # an upstream stage reruns (the filter's config): the training run starts afresh on its new output
    write_pipeline(config, {**run, "train": {"base": {**train, "max_steps": 3, "save_every": 3}}, "sample": sample},
                   embed={"clip": str(root / "clip")}, filter={"report_examples": 2})
    assert glide_cli("run", config) == 0
    printed = capsys.readouterr()
    assert f"removing {out / 'runs' / 'base'}" in printed.out and "train: step 3/3" in printed.err
