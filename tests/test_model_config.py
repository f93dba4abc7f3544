"""Model configs: shipped JSON as package data, pydantic validation with one error style, and the
one ModelKind enum (aliases only where a user types a kind)."""
from __future__ import annotations

import json

import pytest

from shards import UserError
from training.model_config import NAMED_CONFIGS, ModelConfig, available_model_configs, load_model_config
from training.model_kind import ModelKind, parse_model_kind


def write_config(tmp_path, **change):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**load_model_config("tiny").to_dict(), **change}))
    return path


def test_config_round_trips_and_derives_variant_flags():
    cfg = load_model_config("glide-filtered-upsampler-inpaint")
    assert cfg.kind is ModelKind.UPSAMPLER_INPAINT and cfg.inpaint and cfg.super_res and cfg.in_channels == 10
    assert cfg.attention_downsample_rates() == (8, 16, 32) and cfg.channel_mult_tuple() == (1, 1, 2, 2, 4, 4)
    d = cfg.to_dict()
    assert d["kind"] == "upsampler-inpaint" and json.loads(json.dumps(d)) == d and ModelConfig.from_dict(d) == cfg
    assert ModelConfig(kind="upsampler").super_res is True
    assert ModelConfig.from_dict({"channel_mult": [1, 2, 2], "image_size": 32}).channel_mult == "1,2,2"
    inpaint = load_model_config("tiny").replace(kind="base-inpaint", inpaint=None)
    assert inpaint.kind is ModelKind.BASE_INPAINT and inpaint.inpaint and not inpaint.super_res


def test_every_shipped_config_loads_and_comments_are_ignored():
    names = available_model_configs()
    assert {"tiny", "tiny-clip", "glide-filtered-base", "glide-paper-base"} <= set(names)
    for name in names:
        assert load_model_config(name).kind in ModelKind
    # "_comment" is documentation: kept in the file, ignored by the config
    assert "_comment" in json.loads((NAMED_CONFIGS / "tiny.json").read_text())


@pytest.mark.parametrize("change,message", [
    ({"num_chanels": 3}, "unknown key 'num_chanels'"),
    ({"num_channels": "a"}, "key 'num_channels': Input should be a valid integer (got 'a')"),
    ({"num_channels": "192"}, "key 'num_channels': Input should be a valid integer (got '192')"),
    ({"xf_padding": 1}, "key 'xf_padding': Input should be a valid boolean (got 1)"),
    ({"image_size": True}, "key 'image_size': Input should be a valid integer (got True)"),
    ({"text_ctx": 0}, "key 'text_ctx': Input should be greater than 0 (got 0)"),
    ({"kind": "decoder"}, "key 'kind': Input should be 'base', 'upsampler'"),
    ({"kind": "inpaint"}, "key 'kind'"),  # the alias is for the CLI; files hold the stored spelling
    ({"kind": "base", "super_res": True}, "key 'super_res': True contradicts kind 'base'"),
    ({"tokenizer": {"type": "bert"}}, "key 'tokenizer.type': 'bert' is not one of gpt2, clip"),
    ({"num_channels": 48}, "key 'num_channels': 48 x 1 is not a multiple of 32"),
    ({"channel_mult": [1, "2"]}, "key 'channel_mult': a list must hold integers only"),
    ({"attention_resolutions": "16,7"}, "key 'attention_resolutions': each must divide image_size 32"),
])
def test_bad_model_config_is_one_line_naming_file_and_key(tmp_path, change, message):
    path = write_config(tmp_path, **change)
    with pytest.raises(UserError) as e:
        load_model_config(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_noised_clip_sizes_are_checked_at_load_naming_the_model_config_key(tmp_path):
    data = json.loads(json.dumps(load_model_config("tiny-clip").to_dict()))
    for change, message in [
        ({"extra": {**data["extra"], "n_layers": 3}}, "unknown key 'extra.n_layers'"),
        ({"extra": {**data["extra"], "patch_size": 0}}, "key 'extra.patch_size': Input should be greater than 0"),
        ({"extra": {**data["extra"], "logit_scale": 200.0}}, "key 'extra.logit_scale': Input should be less than"),
        ({"text_ctx": "16"}, "key 'text_ctx': Input should be a valid integer"),
        ({"extra": {**data["extra"], "patch_size": 5}}, "key 'image_size': 32 is not a multiple of patch_size 5"),
        ({"tokenizer": {"type": "gpt2"}}, "key 'tokenizer.type': the noised CLIP reads CLIP BPE ids"),
    ]:
        path = tmp_path / "clip.json"
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(UserError) as e:
            load_model_config(path)
        assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_model_config_loads_from_checkpoint_folder_and_rejects_bad_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "glide-checkpoint", "kind": "base",
                                                      "model": load_model_config("tiny").to_dict()}))
    assert load_model_config(tmp_path) == load_model_config("tiny")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_model_config(tmp_path / "broken.json")
    with pytest.raises(UserError, match="no config.json"):
        load_model_config(tmp_path / "..")
    with pytest.raises(UserError, match="no-such: no such model config .* one of: demo-base, "):
        load_model_config("no-such")


def test_model_kind_is_its_stored_string_and_aliases_map_to_it():
    assert [k.value for k in ModelKind] == ["base", "upsampler", "base-inpaint", "upsampler-inpaint", "clip"]
    kind = ModelKind("base-inpaint")
    assert kind == "base-inpaint" and f"{kind}" == str(kind) == "base-inpaint" and repr(kind) == "'base-inpaint'"
    assert json.dumps({"kind": kind}) == '{"kind": "base-inpaint"}' and {"base-inpaint": 1}[kind] == 1
    assert kind.inpaint and not kind.super_res and kind.inpaint_source is ModelKind.BASE
    assert ModelKind.UPSAMPLER.inpaint_variant is ModelKind.UPSAMPLER_INPAINT and ModelKind.CLIP.inpaint_variant is None
    assert parse_model_kind("inpaint") is ModelKind.BASE_INPAINT
    assert parse_model_kind("upsample") is ModelKind.UPSAMPLER
    assert parse_model_kind("upsample-inpaint") is ModelKind.UPSAMPLER_INPAINT
    with pytest.raises(UserError, match=r"^KIND: 'decoder' is not a model kind \(one of: base, upsampler, "):
        parse_model_kind("decoder", "KIND")


def test_train_config_accepts_the_old_spellings_and_stores_one_kind():
    from training.trainer.config import TrainConfig

    cfg = TrainConfig(kind="inpaint", model={"inpaint": "tiny"}, max_steps={"inpaint": 3, "base": 5})
    assert cfg.kind is ModelKind.BASE_INPAINT and cfg.model_kind is ModelKind.BASE_INPAINT
    assert cfg.model_name() == "tiny" and cfg.for_kind().max_steps == 3
    assert cfg.model_dump(mode="json")["kind"] == "base-inpaint"
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg  # how it travels to Ray Train workers


def test_cli_kind_arguments(glide_cli, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        glide_cli("train", "decoder", "--data", tmp_path)
    assert e.value.code == 2 and "'decoder' is not a model kind" in capsys.readouterr().err
    assert glide_cli("checkpoint", "import", "--from", "glide-text2im", "--kind", "decoder",
                     tmp_path / "x.pt", "-o", tmp_path / "out") == 2
    assert "glide: error: --kind: 'decoder' is not a model kind" in capsys.readouterr().err


def test_model_list_names_the_shipped_configs(glide_cli, capsys):
    assert glide_cli("model", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == available_model_configs()
    assert any(line.split()[:2] == ["glide-filtered-upsampler-inpaint", "upsampler-inpaint"] for line in lines)


def test_checkpoints_written_before_the_enum_load_their_kind(tmp_path):
    """A checkpoint's config.json stores kind strings (top level and in "model"): they read as ModelKind."""
    from training.checkpoint import checkpoint_kind, model_config_of

    old_model = {**load_model_config("tiny").to_dict(), "kind": "base-inpaint", "inpaint": True}
    meta = {"format": "glide-checkpoint", "version": 1, "kind": "base-inpaint", "model": old_model}
    assert checkpoint_kind(tmp_path, meta) is ModelKind.BASE_INPAINT
    cfg = model_config_of(tmp_path, meta)
    assert cfg.kind is ModelKind.BASE_INPAINT and cfg.in_channels == 7 and cfg.to_dict() == old_model
