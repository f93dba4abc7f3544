"""Stage runner resume rules (no Ray needed): what counts as done, what is stale, the summary."""
import pyarrow as pa

import shards as sh
from pipeline import stage_runner as sr


def finish_task(ds, name, key, rows=2):
    shard = {"name": name, **sh.write_table(sh.join(ds, "shards", name),
                                            pa.table({"uid": ["a"] * rows}))}
    rejects = {"name": name, **sh.write_table(sh.join(ds, "rejects", name), pa.table({"uid": ["b"]}))}
    result = {"input": rows + 1, "kept": rows, "rejected": {"http_404": 1}, "shard": shard, "rejects": rejects}
    sh.write_json_atomic(sr._record_path(ds, name), {"key": key, "result": result})
    return result


def test_a_task_is_done_only_with_its_record_same_key_and_verified_files(tmp_path):
    ds = str(tmp_path)
    task = sr.ShardTask(name="part-00000.arrow", rows=3, key="k1")
    assert sr.load_done(ds, task) is None
    result = finish_task(ds, task.name, "k1")
    assert sr.load_done(ds, task) == result
    assert sr.load_done(ds, sr.ShardTask(name=task.name, rows=3, key="other-config")) is None
    path = tmp_path / "rejects" / task.name
    path.write_bytes(path.read_bytes()[:-8])  # damaged by a crash or a copy
    assert sr.load_done(ds, task) is None


def test_outputs_of_an_earlier_larger_run_are_removed(tmp_path):
    ds = str(tmp_path)
    for i in range(3):
        finish_task(ds, sh.shard_name(i), "k")
    sr._remove_stale_outputs(ds, {sh.shard_name(0)})
    for kind in ("shards", "rejects"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["part-00000.arrow"]
    assert sorted(p.name for p in (tmp_path / "_progress").iterdir()) == ["part-00000.json"]


def test_summary_table_shows_rates_kept_and_each_reason():
    text = sr.summary_table("ingest", "/data/ds", {"input": 10, "kept": 7, "rejected": {"timeout": 1, "http_404": 2}},
                            seconds=2.0, new_rows=10, skipped=1, shards=3)
    lines = text.splitlines()
    assert lines[0] == "ingest summary" and lines[-1].strip() == "dataset: /data/ds"
    assert any("kept" in l and "7" in l and "70.0%" in l for l in lines)
    assert [l.split()[0] for l in lines if l.startswith("    ")] == ["http_404", "timeout"]
    assert any("rows/s" in l and "5.0" in l for l in lines) and any("1 reused" in l for l in lines)
