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
