"""URL lists -> input shards: every format, streamed, with bad lists named in the error."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards as sh
from shards import UserError
from pipeline.ingest import url_lists

ROWS = [{"u": f"http://example.com/{i}.jpg", "text": f"caption, \"{i}\"", "extra": i} for i in range(7)]


def write_list(path, fmt, rows=ROWS):
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(["u", "text", "extra"])]
        for r in rows:
            text = '"' + r["text"].replace('"', '""') + '"' if fmt == "csv" else r["text"].replace('"', "")
            lines.append(sep.join([r["u"], text, str(r["extra"])]))
        data = ("\n".join(lines) + "\n").encode()
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("name,fmt", [("l.parquet", "parquet"), ("l.csv", "csv"), ("l.tsv.gz", "tsv"),
                                      ("l.jsonl", "jsonl"), ("l.jsonl.gz", "jsonl"), ("l.csv.gz", "csv")])
def test_every_list_format_becomes_input_shards_with_source_rows(tmp_path, name, fmt):
    path = str(tmp_path / name)
    write_list(path, fmt)
    ds = str(tmp_path / "ds")
    record = url_lists.shard_url_lists([path], ds, url_col="u", caption_col="text", shard_size=3)
    assert record["rows"] == 7 and [s["rows"] for s in record["shards"]] == [3, 3, 1]
    table = pa.concat_tables(sh.read_table(p) for p in sh.list_shards(ds, url_lists.INPUTS_DIR))
    assert table.schema.names == ["url", "caption", "source"]
    assert table.column("url").to_pylist() == [r["u"] for r in ROWS]
    expected_caption = [r["text"] if fmt != "tsv" else r["text"].replace('"', "") for r in ROWS]
    assert table.column("caption").to_pylist() == expected_caption
    assert table.column("source").to_pylist() == [f"{path}:{i}" for i in range(7)]


def test_several_lists_stream_into_one_sequence_of_shards_and_reruns_reuse_them(tmp_path):
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl")
    write_list(a, "parquet")
    write_list(b, "jsonl")
    ds = str(tmp_path / "ds")
    first = url_lists.shard_url_lists([a, b], ds, url_col="u", caption_col="text", shard_size=4)
    assert first["rows"] == 14 and [s["rows"] for s in first["shards"]] == [4, 4, 4, 2]
    mtime = (tmp_path / "ds" / "_inputs" / "part-00000.arrow").stat().st_mtime_ns
    again = url_lists.shard_url_lists([a, b], ds, url_col="u", caption_col="text", shard_size=4)
    assert again == first
    assert (tmp_path / "ds" / "_inputs" / "part-00000.arrow").stat().st_mtime_ns == mtime
    # A shorter list replaces the shards; none of the old ones linger.
    write_list(a, "parquet", ROWS[:2])
    short = url_lists.shard_url_lists([a], ds, url_col="u", caption_col="text", shard_size=4)
    assert short["rows"] == 2 and len(sh.list_shards(ds, url_lists.INPUTS_DIR)) == 1


def test_fsspec_uris_work_for_lists_and_datasets(tmp_path):
    import fsspec

    with fsspec.open("memory://lists/urls.csv", "wb") as f:
        f.write(b"url,caption\nhttp://x/1.jpg,one\nhttp://x/2.jpg,two\n")
    record = url_lists.shard_url_lists(["memory://lists/urls.csv"], "memory://out/ds", url_col="url",
                                       caption_col="caption", shard_size=10)
    assert record["rows"] == 2
    table = sh.read_table("memory://out/ds/_inputs/part-00000.arrow")
    assert table.column("caption").to_pylist() == ["one", "two"]


@pytest.mark.parametrize("name,fmt", [("l.parquet", "parquet"), ("l.csv", "csv"), ("l.jsonl", "jsonl")])
def test_missing_column_is_a_user_error_naming_file_and_column(tmp_path, name, fmt):
    path = str(tmp_path / name)
    write_list(path, fmt)
    with pytest.raises(UserError, match=rf"{name}: no column 'url'"):
        url_lists.shard_url_lists([path], str(tmp_path / "ds"), url_col="url", caption_col="text", shard_size=3)


def test_unreadable_or_unknown_lists_are_user_errors_naming_the_file(tmp_path):
    ds = str(tmp_path / "ds")
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserError, match="broken.parquet"):
        url_lists.shard_url_lists([str(bad)], ds, url_col="url", caption_col="caption", shard_size=3)
    with pytest.raises(UserError, match="missing.csv: URL list not found"):
        url_lists.shard_url_lists([str(tmp_path / "missing.csv")], ds, url_col="url", caption_col="caption",
                                  shard_size=3)
    odd = tmp_path / "list.xlsx"
    odd.write_bytes(b"x")
    with pytest.raises(UserError, match="list.xlsx: cannot tell the URL list format"):
        url_lists.shard_url_lists([str(odd)], ds, url_col="url", caption_col="caption", shard_size=3)
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"url": "http://x/1", "caption": "a"}\n{"url": "http://x/2", "caption": \n')
    with pytest.raises(UserError, match="bad.jsonl"):
        url_lists.shard_url_lists([str(jl)], ds, url_col="url", caption_col="caption", shard_size=3)


def test_sharding_reports_progress_per_input_shard(tmp_path):
    path = str(tmp_path / "l.parquet")
    write_list(path, "parquet")
    seen = []
    url_lists.shard_url_lists([path], str(tmp_path / "ds"), url_col="u", caption_col="text", shard_size=3,
                              progress=seen.append)
    assert seen == [3, 6, 7]
