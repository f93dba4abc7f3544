"""The shard contract (the `shards` package): schemas, uid, atomic files, manifests, verification."""
import dataclasses
import hashlib
import json
import os

import pyarrow as pa
import pytest

import shards as sh
from shards import UserError


def pairs_table(n, start=0):
    rows = []
    for i in range(start, start + n):
        url, caption = f"http://example.com/{i}.jpg", f"a red square {i}"
        image = bytes([i % 256]) * 10
        rows.append({"uid": sh.compute_uid(url, caption), "url": url, "caption": caption, "image": image,
                     "image_format": "jpeg", "width": 8, "height": 8, "original_width": 16,
                     "original_height": 16, "sha256": hashlib.sha256(image).hexdigest(), "source": f"l.csv:{i}"})
    return pa.Table.from_pylist(rows, schema=sh.PAIRS_SCHEMA)


def test_uid_is_first_128_bits_of_sha256_of_url_newline_caption():
    uid = sh.compute_uid("http://a/b.jpg", "a cat")
    assert uid == hashlib.sha256(b"http://a/b.jpg\na cat").hexdigest()[:32]
    assert len(uid) == 32 and int(uid, 16) >= 0
    assert sh.compute_uid("http://a/b.jpg", None) == sh.compute_uid("http://a/b.jpg", "")
    assert sh.compute_uid("http://a/b.jpg", "a cat ") != uid


def test_schemas_have_the_contract_columns():
    assert sh.PAIRS_SCHEMA.names[:11] == ["uid", "url", "caption", "image", "image_format", "width", "height",
                                          "original_width", "original_height", "sha256", "source"]
    assert sh.PAIRS_SCHEMA.field("width").type == pa.int32()
    assert sh.REJECTS_SCHEMA.names == ["uid", "url", "caption", "stage", "reason", "detail", "score"]
    assert sh.REJECTS_SCHEMA.field("score").type == pa.float32()


@pytest.mark.parametrize("base", ["local", "memory://shards-test"])
def test_write_then_read_table_round_trips_without_leftover_temp_files(tmp_path, base):
    root = str(tmp_path) if base == "local" else base
    path = sh.join(root, "shards", "part-00000.arrow")
    table = pairs_table(5)
    info = sh.write_table(path, table)
    assert info["rows"] == 5 and info == {"rows": 5, **dataclasses.asdict(sh.file_digest(path))}
    assert sh.read_table(path).equals(table)
    assert sh.read_table(path, columns=["uid"]).num_columns == 1
    import fsspec
    fs, p = fsspec.core.url_to_fs(sh.join(root, "shards"))
    assert [os.path.basename(x) for x in fs.ls(p, detail=False)] == ["part-00000.arrow"]


def test_shard_writer_streams_batches_and_abort_leaves_nothing(tmp_path):
    path = str(tmp_path / "shards" / "part-00001.arrow")
    with sh.ShardWriter(path, sh.PAIRS_SCHEMA) as w:
        w.write(pairs_table(3))
        w.write(pairs_table(2, start=3))
        info = w.close()
    assert info["rows"] == 5 and sh.verify_shard(path, info)
    assert sh.read_table(path).column("uid").to_pylist() == pairs_table(5).column("uid").to_pylist()

    other = str(tmp_path / "shards" / "part-00002.arrow")
    with pytest.raises(RuntimeError):
        with sh.ShardWriter(other, sh.PAIRS_SCHEMA) as w:
            w.write(pairs_table(1))
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path / "shards")) == ["part-00001.arrow"]


def test_verify_shard_rejects_missing_damaged_and_mismatched_files(tmp_path):
    path = str(tmp_path / "part-00000.arrow")
    info = sh.write_table(path, pairs_table(4))
    assert sh.verify_shard(path, info) and sh.verify_shard(path)
    assert not sh.verify_shard(path, {**info, "rows": 3})
    assert not sh.verify_shard(path, {**info, "sha256": "0" * 64})
    assert not sh.verify_shard(str(tmp_path / "missing.arrow"))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert not sh.verify_shard(path)
    with pytest.raises(UserError, match="part-00000.arrow"):
        sh.read_table(path)


def test_manifest_round_trip_lists_and_streams_the_finished_shards(tmp_path):
    ds = str(tmp_path / "ds")
    infos = [{"name": sh.shard_name(i), **sh.write_table(sh.join(ds, "shards", sh.shard_name(i)),
                                                         pairs_table(3, start=3 * i))} for i in range(2)]
    manifest = sh.write_manifest(ds, stage="ingest", config={"image_size": 8}, shards=infos,
                                 counts={"input": 8, "kept": 6, "rejected": {"http_404": 2}})
    read = sh.read_manifest(ds)
    assert read == manifest and read["format"] == "glide-shards" and read["version"] == 1
    assert read["shards"][1] == infos[1] and read["counts"]["rejected"] == {"http_404": 2}
    assert set(read) >= {"format", "version", "stage", "created", "config", "inputs", "shards", "counts"}
    assert [os.path.basename(p) for p in sh.list_shards(ds)] == ["part-00000.arrow", "part-00001.arrow"]
    batches = list(sh.iter_record_batches(ds, columns=["uid", "caption"]))
    assert sum(b.num_rows for b in batches) == 6 and batches[0].schema.names == ["uid", "caption"]
    assert sh.manifest_digest(ds) == hashlib.sha256(open(os.path.join(ds, "manifest.json"), "rb").read()).hexdigest()


def test_manifest_refuses_counts_that_break_the_invariant(tmp_path):
    with pytest.raises(ValueError, match="input = kept \\+ rejected"):
        sh.write_manifest(str(tmp_path), stage="ingest", config={}, shards=[],
                          counts={"input": 3, "kept": 0, "rejected": {"timeout": 2}})
    assert not (tmp_path / "manifest.json").exists()


def test_read_manifest_names_the_dataset_when_missing_or_foreign(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path)):
        sh.read_manifest(str(tmp_path))
    assert sh.read_manifest(str(tmp_path), missing_ok=True) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a glide-shards manifest"):
        sh.read_manifest(str(tmp_path))
