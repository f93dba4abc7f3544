"""Stage runner resume rules (no Ray needed): what counts as done, what is stale, the summary."""
import pyarrow as pa
import pytest

import shards as sh
from pipeline.stages import FileInfo, ShardResult, ShardTask
from pipeline.stages import records
from pipeline.stages.summary import summary_table


def finish_task(ds, name, key, rows=2):
    shard = FileInfo(name=name, **sh.write_table(sh.join(ds, "shards", name), pa.table({"uid": ["a"] * rows})))
    rejects = FileInfo(name=name, **sh.write_table(sh.join(ds, "rejects", name), pa.table({"uid": ["b"]})))
    result = ShardResult(input=rows + 1, kept=rows, rejected={"http_404": 1}, shard=shard, rejects=rejects)
    records.save_done(ds, ShardTask(name=name, rows=rows + 1, key=key), result)
    return result


def test_a_task_is_done_only_with_its_record_same_key_and_verified_files(tmp_path):
    ds = str(tmp_path)
    task = ShardTask(name="part-00000.arrow", rows=3, key="k1")
    assert records.load_done(ds, task) is None
    result = finish_task(ds, task.name, "k1")
    assert records.load_done(ds, task) == result
    assert records.load_done(ds, ShardTask(name=task.name, rows=3, key="other-config")) is None
    path = tmp_path / "rejects" / task.name
    path.write_bytes(path.read_bytes()[:-8])  # damaged by a crash or a copy
    assert records.load_done(ds, task) is None


def test_outputs_of_an_earlier_larger_run_are_removed(tmp_path):
    ds = str(tmp_path)
    for i in range(3):
        finish_task(ds, sh.shard_name(i), "k")
    (tmp_path / "shards" / ".part-00000.arrow.1234abcd.tmp").write_bytes(b"half a shard of a killed run")
    records.remove_stale_outputs(ds, {sh.shard_name(0)})
    for kind in ("shards", "rejects"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["part-00000.arrow"]
    assert sorted(p.name for p in (tmp_path / "_progress").iterdir()) == ["part-00000.json"]


def test_summary_table_shows_rates_kept_and_each_reason():
    text = summary_table("ingest", "/data/ds", {"input": 10, "kept": 7, "rejected": {"timeout": 1, "http_404": 2}},
                            seconds=2.0, new_rows=10, skipped=1, shards=3)
    lines = text.splitlines()
    assert lines[0] == "ingest summary" and lines[-1].strip() == "dataset: /data/ds"
    assert any("kept" in l and "7" in l and "70.0%" in l for l in lines)
    assert [l.split()[0] for l in lines if l.startswith("    ")] == ["http_404", "timeout"]
    assert any("rows/s" in l and "5.0" in l for l in lines) and any("1 reused" in l for l in lines)


def test_a_shard_result_that_loses_rows_is_refused():
    info = FileInfo(name="part-00000.arrow", rows=2, bytes=10, sha256="0" * 64)
    rejects = FileInfo(name="part-00000.arrow", rows=1, bytes=10, sha256="1" * 64)
    assert ShardResult(input=3, kept=2, rejected={"timeout": 1}, shard=info, rejects=rejects).input == 3
    with pytest.raises(ValueError, match="input 4 != kept 2 \\+ rejected 1"):
        ShardResult(input=4, kept=2, rejected={"timeout": 1}, shard=info, rejects=rejects)
    with pytest.raises(ValueError, match="files hold"):
        ShardResult(input=3, kept=2, rejected={"timeout": 1}, shard=info, rejects=FileInfo("x", 0, 1, "2"))
    result = ShardResult(input=3, kept=2, rejected={"timeout": 1}, shard=info, rejects=rejects, extra={"a": 1})
    assert ShardResult.from_dict(result.to_dict()) == result
