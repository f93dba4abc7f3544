"""`glide embed` as a user runs it, on a clean CLIP trained here with `glide train clip --clip-mode clean`.

Sample-world shards with two images that do not decode (a truncated JPEG, bytes that are no image):
they become decode_error rejects; every other pair keeps all its columns and gains the three-crop
embedding, equal to the same CLIP's features computed in this process. A rerun resumes.
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import shards as sh
from conftest import run_glide, save_tiny_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CORRUPT = {3: "truncated", 5: "not_image"}  # rows of part-00001 whose image bytes are broken


def corrupt_one_shard(dataset) -> set[str]:
    """Break two images of part-00001 (and rewrite the manifest); returns their uids."""
    manifest = sh.read_manifest(str(dataset))
    path = str(dataset / sh.SHARDS_DIR / "part-00001.arrow")
    rows = sh.read_table(path).to_pylist()
    for i, how in CORRUPT.items():
        data = rows[i]["image"]
        rows[i]["image"] = data[: len(data) // 3] if how == "truncated" else b"<html>not an image</html>"
    manifest["shards"][1] = {"name": "part-00001.arrow",
                             **sh.write_table(path, pa.Table.from_pylist(rows, schema=sh.PAIRS_SCHEMA))}
    sh.write_manifest(str(dataset), stage="test", config={}, shards=manifest["shards"], counts=manifest["counts"])
    return {rows[i]["uid"] for i in CORRUPT}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from train_world import write_world_shards

    root = tmp_path_factory.mktemp("embed")
    dataset = write_world_shards(root, count=40, rows_per_shard=16, image_size=48, max_shapes=2)
    bad_uids = corrupt_one_shard(dataset)
    run = root / "clean-clip"
    result = run_glide("train", "clip", "--clip-mode", "clean", "--data", dataset, "-o", run, "--max-steps", 3,
                       "--save-every", 3, "--batch-size", 8, "--workers", 1, "--log-every", 1, timeout=900)
    assert result.returncode == 0, result.stderr
    return {"root": root, "dataset": dataset, "bad_uids": bad_uids, "run": run}


@pytest.fixture(scope="module")
def embedded(world):
    out = world["root"] / "embedded"
    result = run_glide("embed", world["dataset"], "-o", out, "--clip", world["run"], "--batch-size", 4, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result


def test_clean_clip_run_records_its_mode_and_loads_as_a_feature_extractor(world):
    from filtering.clip_features import load_clip_features
    from training.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir

    meta = read_checkpoint_meta(resolve_checkpoint_dir(world["run"]))
    assert meta["kind"] == "clip" and meta["extra"]["train"]["clip_mode"] == "clean" and meta["step"] == 3
    features = load_clip_features(str(world["run"]), "cpu")
    assert (features.dim, features.crop_size) == (32, 32)  # tiny-clip: 32-d joint space, 32px images
    z = features.encode_images([Image.new("RGB", (64, 32), (200, 40, 40))])
    q = features.encode_text(["a red circle", "a knife"])
    torch.testing.assert_close(torch.cat([z, q]).norm(dim=1), torch.ones(3))


def test_a_noised_clip_is_refused_for_image_features(tmp_path):
    from filtering.clip_source import resolve_clip

    noised = save_tiny_checkpoint(tmp_path / "noised", "tiny-clip")
    with pytest.raises(sh.UserError, match=r"noised CLIP .*glide train clip --clip-mode clean"):
        resolve_clip(str(noised))


def test_glide_embed_adds_the_embedding_and_rejects_undecodable_images(world, embedded):
    from filtering.clip_features import load_clip_features

    out, result = embedded
    manifest = sh.read_manifest(str(out))
    assert manifest["stage"] == "embed"
    assert manifest["counts"] == {"input": 40, "kept": 38, "rejected": {"decode_error": 2}}
    assert manifest["inputs"] == [sh.input_ref(str(world["dataset"]))]
    clip = manifest["config"]["clip_model"]
    assert (clip["family"], clip["clip_mode"], clip["dim"], clip["step"]) == ("glide", "clean", 32, 3)
    assert "decode_error" in result.stdout and "38" in result.stdout

    rejects = pa.concat_tables(sh.read_table(p) for p in sh.list_shards(str(out), sh.REJECTS_DIR))
    assert set(rejects.column("uid").to_pylist()) == world["bad_uids"]
    assert set(rejects.column("reason").to_pylist()) == {"decode_error"}
    details = " ".join(rejects.column("detail").to_pylist())
    assert "truncated" in details.lower() and "UnidentifiedImageError" in details

    pairs = pa.concat_tables(sh.read_table(p) for p in sh.list_shards(str(out)))
    assert pairs.schema.names == sh.PAIRS_SCHEMA.names + ["clip_embedding"]
    assert pairs.schema.field("clip_embedding").type == pa.list_(pa.float16(), 32)
    source = pa.concat_tables(sh.read_table(p) for p in sh.list_shards(str(world["dataset"])))
    kept_source = source.filter(pa.array([u not in world["bad_uids"] for u in source.column("uid").to_pylist()]))
    assert pairs.drop_columns(["clip_embedding"]).to_pylist() == kept_source.to_pylist()  # carried over as is

    stored = np.array(pairs.column("clip_embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=2e-3)
    features = load_clip_features(str(world["run"]), "cpu", batch_size=5)
    images = [Image.open(io.BytesIO(b)) for b in kept_source.column("image").to_pylist()]
    expected = features.encode_images(images).numpy().astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(stored, expected, atol=2e-3)


def test_a_rerun_resumes_and_keeps_the_finished_shards(world, embedded):
    out, _ = embedded
    before = {s["name"]: s["sha256"] for s in sh.read_manifest(str(out))["shards"]}
    (out / sh.SHARDS_DIR / "part-00002.arrow").unlink()  # as if killed before this shard was written
    result = run_glide("embed", world["dataset"], "-o", out, "--clip", world["run"], "--batch-size", 8, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "2 reused" in result.stdout  # another batch size gives the same features: not a reason to redo
    manifest = sh.read_manifest(str(out))
    assert manifest["counts"] == {"input": 40, "kept": 38, "rejected": {"decode_error": 2}}
    after = {s["name"]: s["sha256"] for s in manifest["shards"]}
    assert {k: after[k] for k in ("part-00000.arrow", "part-00001.arrow")} == \
        {k: before[k] for k in ("part-00000.arrow", "part-00001.arrow")}
    assert sh.count_rows(str(out / sh.SHARDS_DIR / "part-00002.arrow")) == 8


def test_embedding_an_embedded_shard_replaces_the_column_and_keeps_extra_columns(world, embedded, tmp_path):
    """The worker in-process: columns a later stage added are carried; clip_embedding is replaced in place."""
    from filtering.embed_worker import EmbedWorker

    out, _ = embedded
    table = sh.read_table(str(out / sh.SHARDS_DIR / "part-00000.arrow"))
    table = table.append_column(pa.field("score_people", pa.float32()), pa.array(np.arange(16, dtype=np.float32)))
    source = str(tmp_path / "in.arrow")
    sh.write_table(source, table)
    worker = EmbedWorker({"clip": str(world["run"]), "batch_size": 6, "cpus_per_worker": 1}, "cpu")
    reported = []
    outcome = worker.embed_shard(source, str(tmp_path / "pairs.arrow"), str(tmp_path / "rejects.arrow"),
                                 reported.append)
    assert (outcome.input, outcome.kept, outcome.rejected, sum(reported)) == (16, 16, {}, 16)
    again = sh.read_table(str(tmp_path / "pairs.arrow"))
    assert again.schema.names == table.schema.names
    assert again.column("score_people").to_pylist() == list(range(16))
    np.testing.assert_allclose(np.array(again.column("clip_embedding").to_pylist(), dtype=np.float32),
                               np.array(table.column("clip_embedding").to_pylist(), dtype=np.float32), atol=2e-3)


def test_bad_input_exits_2_with_one_line_naming_it(world, tmp_path, capsys):
    from pipeline.cli import main

    out = str(tmp_path / "out")
    assert main(["embed", str(world["dataset"]), "-o", out, "--clip", "ViT-B-16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ViT-B-16': an open_clip architecture needs a local weights file" in err[0]
    assert main(["embed", str(tmp_path / "nowhere"), "-o", out, "--clip", str(world["run"])]) == 2
    assert "nowhere: no manifest.json" in capsys.readouterr().err
    assert main(["embed", str(world["dataset"]), "-o", str(world["dataset"]), "--clip", str(world["run"])]) == 2
    assert "must differ from the input" in capsys.readouterr().err


def test_a_clean_clip_with_the_conv_image_tower_gives_three_crop_features(tmp_path):
    """The demo's CLIP has the convolutional image tower (image_tower "conv"): `glide embed` loads
    it from its checkpoint like any clean CLIP, and its three-crop features are real, unit-norm and
    see the difference between two images."""
    import torch

    from filtering.clip_features import load_clip_features
    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import ModelConfig, load_model_config

    cfg = load_model_config("tiny-clip").to_dict()
    cfg["extra"] = {k: v for k, v in cfg["extra"].items() if "image" not in k and k != "patch_size"}
    cfg["extra"].update(image_tower="conv", conv_widths=[8, 16])
    cfg = ModelConfig.from_dict(cfg, source="test config")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "conv-clip", create_model(cfg, device="cpu"), cfg, step=5,
                           extra={"train": {"clip_mode": "clean"}})
    features = load_clip_features(str(ckpt), "cpu")
    assert (features.dim, features.crop_size) == (32, 32)
    z = features.encode_images([Image.new("RGB", (96, 32), (200, 40, 40)), Image.new("RGB", (32, 48), (20, 40, 200))])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert (z[0] - z[1]).norm() > 1e-3
