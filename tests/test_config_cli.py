"""Config validation and the CLI's error contract: one line, names the input, exit code 2."""
import textwrap

import pytest

from pipeline.config import PipelineConfig, load_config, override
from shards import UserError


def write(tmp_path, text, name="pipeline.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.ingest.url_col == "url"
    assert cfg.ingest.allow_private_networks is False
    assert cfg.ray.address is None


def test_values_are_read_and_typed(tmp_path):
    cfg = load_config(write(tmp_path, """
        ingest:
          shard_size: 500
          image_size: 64
        ray:
          num_cpus: 2
    """))
    assert cfg.ingest.shard_size == 500 and cfg.ingest.image_size == 64 and cfg.ray.num_cpus == 2


@pytest.mark.parametrize("text, expected", [
    ("ingest:\n  shard_sise: 3\n", "unknown config key 'ingest.shard_sise'"),
    ("ingets:\n  shard_size: 3\n", "unknown config key 'ingets'"),
    ("ingest:\n  shard_size: many\n", "config key 'ingest.shard_size'"),
    ("ingest:\n  resize_mode: squash\n", "config key 'ingest.resize_mode'"),
    ("ingest: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_bad_configs_name_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_flags_override_config_and_none_means_not_given():
    cfg = PipelineConfig()
    override(cfg.ingest, {"shard_size": 7, "url_col": None})
    assert cfg.ingest.shard_size == 7 and cfg.ingest.url_col == "url"
    with pytest.raises(UserError, match="shard_size"):
        override(cfg.ingest, {"shard_size": 0})


def test_config_show_prints_resolved_yaml(glide, tmp_path):
    path = write(tmp_path, "ingest:\n  shard_size: 123\n")
    result = glide("config", "show", path)
    assert result.returncode == 0, result.stderr
    assert "shard_size: 123" in result.stdout
    assert "url_col: url" in result.stdout  # defaults filled in


def test_cli_bad_config_is_one_line_exit_2(glide, tmp_path):
    path = write(tmp_path, "ingest:\n  bogus: 1\n")
    result = glide("config", "show", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"glide: error: {path}: unknown config key 'ingest.bogus'"]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(glide, tmp_path):
    path = write(tmp_path, "ingest:\n  bogus: 1\n")
    result = glide("config", "show", path, "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_help_lists_commands(glide):
    result = glide("--help")
    assert result.returncode == 0
    assert "config" in result.stdout


QUICK = """
    train:
      batch_size: 32
      max_steps:
        base: 2000
        upsampler: 150
    run:
      out: full-output
      evaluate:
        guidance: [1, 2, 3, 4, 5]
        samples_per_setting: 64
        features: scene:checkpoints/demo/scene-classifier
    quick:
      train:
        max_steps:
          base: 300
      run:
        out: quick-output
        evaluate:
          guidance: [1, 3]
"""


def test_quick_lays_its_section_over_the_config_key_by_key(tmp_path):
    path = write(tmp_path, QUICK)
    full, quick = load_config(path), load_config(path, quick=True)
    assert full.train.max_steps == {"base": 2000, "upsampler": 150} and full.run.out == "full-output"
    assert full.run.evaluate.guidance == [1, 2, 3, 4, 5]
    # nested mappings merge (upsampler and samples_per_setting stay), lists and scalars are replaced
    assert quick.train.max_steps == {"base": 300, "upsampler": 150} and quick.train.batch_size == 32
    assert quick.run.out == "quick-output" and quick.run.evaluate.guidance == [1, 3]
    assert quick.run.evaluate.samples_per_setting == 64 and quick.quick == {}


@pytest.mark.parametrize("text, quick, expected", [
    (QUICK.replace("      guidance: [1, 3]", "      guidanse: [1, 3]"), False,
     "(its quick section): unknown config key 'run.evaluate.guidanse'"),
    ("ingest:\n  shard_size: 3\n", True, "--quick: this config has no quick section"),
    ("quick: [1, 2]\n", False, "quick: must be a mapping"),
])
def test_a_bad_quick_section_is_an_error_even_without_quick(tmp_path, text, quick, expected):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_config(path, quick=quick)
    assert expected in str(e.value) and str(path) in str(e.value)


def test_the_miniature_experiment_plans_its_full_and_quick_runs():
    """configs/miniature.yaml, as a user runs it: every stage of the claims experiment, the quick run
    shorter and in its own folder."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "miniature.yaml"
    full, quick = load_config(path), load_config(path, quick=True)
    assert full.run.stages == ["ingest", "embed", "label", "train-base", "train-base-unfiltered", "train-clip",
                               "train-inpaint", "evaluate", "claims"]
    assert full.run.evaluate.guidance == [1, 2, 3, 4, 5] and full.sample_world.max_shapes == 2
    assert full.run.evaluate.clip_guidance and full.run.evaluate.score_clip == "checkpoints/demo/clip"
    assert full.run.train["clip"]["clip_mode"] == "noised" and full.train.model["base"] == "miniature-base"
    assert quick.train.max_steps["base"] < full.train.max_steps["base"] and quick.run.out != full.run.out
    assert quick.run.stages == full.run.stages
    # the quick section shortens the CLIP and inpainting runs and keeps their other keys (merged key by key)
    assert quick.run.train["clip"]["max_steps"] < full.run.train["clip"]["max_steps"]
    assert quick.run.train["clip"]["model"] == "demo-noised-clip"
    assert quick.run.claims.inpainting.images < full.run.claims.inpainting.images
