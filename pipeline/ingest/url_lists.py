"""URL lists -> input shards, streamed: a 100M-row list is never held in memory at once.

Reads parquet, csv, tsv and jsonl (each optionally gzipped), local or fsspec URIs,
and writes DATASET/_inputs/part-NNNNN.arrow with columns url, caption, source
("<list file>:<row>"), `shard_size` rows each. `_inputs/inputs.json`, written last,
records what was sharded so a re-run with the same lists reuses the shards.
"""
from __future__ import annotations

import json
import posixpath
from typing import Callable, Iterator, Optional

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import shards as sh
from shards import UserError

INPUTS_DIR = "_inputs"
INPUTS_RECORD = "inputs.json"
FORMATS = ("parquet", "csv", "tsv", "jsonl")
INPUT_SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("source", pa.string())])
_READ_BLOCK = 4 << 20  # bytes per csv/json block: bounds memory, not correctness


def detect_format(path: str, explicit: Optional[str] = None) -> str:
    """The list's format from `explicit` or its extension (a trailing .gz is ignored)."""
    if explicit:
        return explicit
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = name.rsplit(".", 1)[-1] if "." in posixpath.basename(name) else ""
    if ext == "json":
        ext = "jsonl"
    if ext not in FORMATS:
        raise UserError(f"{path}: cannot tell the URL list format from the extension; "
                        f"use one of .parquet/.csv/.tsv/.jsonl[.gz] or --input-format")
    return ext


def expand_paths(paths: list[str]) -> list[str]:
    """Files named by `paths`; a folder stands for its list files, sorted."""
    files: list[str] = []
    for path in paths:
        try:
            fs, p = fsspec.core.url_to_fs(path)
            is_dir = fs.isdir(p)
            exists = is_dir or fs.exists(p)
        except Exception as e:  # unknown protocol, missing credentials, ...
            raise UserError(f"{path}: cannot open URL list ({type(e).__name__}: {e})") from None
        if not exists:
            raise UserError(f"{path}: URL list not found")
        if is_dir:
            found = sorted(
                x for x in fs.ls(p, detail=False)
                if any(x.lower().endswith(f".{f}") or x.lower().endswith(f".{f}.gz") for f in FORMATS + ("json",))
            )
            if not found:
                raise UserError(f"{path}: folder holds no .parquet/.csv/.tsv/.jsonl files")
            protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
            files += [protocol + x if protocol and "://" not in x else x for x in found]
        else:
            files.append(path)
    return files


def _check_columns(path: str, names: list[str], url_col: str, caption_col: str) -> None:
    for col in (url_col, caption_col):
        if col not in names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise UserError(f"{path}: no column '{col}' (columns: {shown}); set --url-col/--caption-col")


def _parquet_batches(path: str, url_col: str, caption_col: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        _check_columns(path, pf.schema_arrow.names, url_col, caption_col)
        yield from pf.iter_batches(batch_size=65536, columns=[url_col, caption_col])


def _csv_batches(path: str, fmt: str, url_col: str, caption_col: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",",
                              quote_char=False if fmt == "tsv" else '"')
    read = pcsv.ReadOptions(block_size=_READ_BLOCK)
    with fsspec.open(path, "rb", compression="infer") as f:  # header only, to name a missing column
        names = pcsv.open_csv(f, read_options=read, parse_options=parse).schema.names
    _check_columns(path, names, url_col, caption_col)
    convert = pcsv.ConvertOptions(include_columns=[url_col, caption_col],
                                  column_types={url_col: pa.string(), caption_col: pa.string()},
                                  strings_can_be_null=False)
    with fsspec.open(path, "rb", compression="infer") as f:
        yield from pcsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)


def _jsonl_batches(path: str, url_col: str, caption_col: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pjson

    with fsspec.open(path, "rb", compression="infer") as f:
        first = f.readline()
    if not first.strip():
        return
    try:
        record = json.loads(first)
    except ValueError as e:
        raise UserError(f"{path}: line 1 is not JSON ({e})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: line 1 is not a JSON object")
    _check_columns(path, list(record), url_col, caption_col)
    schema = pa.schema([(url_col, pa.string()), (caption_col, pa.string())])
    parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    with fsspec.open(path, "rb", compression="infer") as f:
        for batch in pjson.open_json(f, read_options=pjson.ReadOptions(block_size=_READ_BLOCK),
                                     parse_options=parse):
            yield batch.select([url_col, caption_col])


def iter_url_list(path: str, fmt: str, url_col: str, caption_col: str) -> Iterator[pa.Table]:
    """Stream one list as tables of (url, caption, source); UserError naming the file on bad input."""
    if fmt == "parquet":
        batches = _parquet_batches(path, url_col, caption_col)
    elif fmt in ("csv", "tsv"):
        batches = _csv_batches(path, fmt, url_col, caption_col)
    else:
        batches = _jsonl_batches(path, url_col, caption_col)
    row = 0
    prefix = pa.scalar(f"{path}:")
    try:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            url = pc.cast(batch.column(url_col), pa.string())
            caption = pc.fill_null(pc.cast(batch.column(caption_col), pa.string()), "")
            index = pa.array(np.arange(row, row + n, dtype=np.int64)).cast(pa.string())
            source = pc.binary_join_element_wise(prefix, index, "")
            row += n
            yield pa.table([url, caption, source], schema=INPUT_SCHEMA)
    except UserError:
        raise
    except (pa.ArrowException, OSError, EOFError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable {fmt} URL list near row {row} ({first})") from None


def _source_key(files: list[str], fmt: Optional[str], url_col: str, caption_col: str, shard_size: int) -> dict:
    """What identifies an input sharding: the lists (with sizes), columns and shard size."""
    sources = []
    for path in files:
        fs, p = fsspec.core.url_to_fs(path)
        try:
            info = fs.info(p)
        except Exception:  # some filesystems report nothing: the path alone identifies it
            info = {}
        version = next((str(info[k]) for k in ("mtime", "LastModified", "updated", "ETag", "etag") if k in info),
                       None)
        sources.append({"path": path, "bytes": info.get("size"), "version": version})
    return {"sources": sources, "input_format": fmt, "url_col": url_col, "caption_col": caption_col,
            "shard_size": shard_size}


def shard_url_lists(paths: list[str], dataset: str, *, url_col: str, caption_col: str, shard_size: int,
                    input_format: Optional[str] = None,
                    progress: Optional[Callable[[int], None]] = None) -> dict:
    """Write the input shards for `paths` under DATASET/_inputs (reusing a finished identical run).

    `progress(rows_so_far)` is called after each input shard is written.

    Returns the inputs record: {"key", "rows", "shards": [{"name", "rows", "bytes", "sha256"}]}.
    """
    files = expand_paths(paths)
    formats = [detect_format(p, input_format) for p in files]
    key = _source_key(files, input_format, url_col, caption_col, shard_size)
    record_path = sh.join(dataset, INPUTS_DIR, INPUTS_RECORD)
    fs, rp = fsspec.core.url_to_fs(record_path)
    if fs.exists(rp):
        with fs.open(rp, "rb") as f:
            old = json.loads(f.read())
        if old.get("key") == key and all(
            sh.verify_shard(sh.join(dataset, INPUTS_DIR, s["name"]), {"rows": s["rows"], "bytes": s["bytes"]})
            for s in old["shards"]
        ):
            return old
        fs.rm(rp)

    written: list[dict] = []
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush(rows: int) -> None:
        nonlocal pending, pending_rows
        table = pa.concat_tables(pending)
        head, rest = table.slice(0, rows), table.slice(rows)
        name = sh.shard_name(len(written))
        info = sh.write_table(sh.join(dataset, INPUTS_DIR, name), head.combine_chunks())
        written.append({"name": name, **info})
        if progress is not None:
            progress(sum(s["rows"] for s in written))
        pending = [rest] if rest.num_rows else []
        pending_rows = rest.num_rows

    for path, fmt in zip(files, formats):
        for table in iter_url_list(path, fmt, url_col, caption_col):
            pending.append(table)
            pending_rows += table.num_rows
            while pending_rows >= shard_size:
                flush(shard_size)
    if pending_rows:
        flush(pending_rows)
    # Shards left over from an earlier, longer list must not be picked up.
    stale = [x for x in sh.list_shards(dataset, INPUTS_DIR) if posixpath.basename(x) not in {s["name"] for s in written}]
    for path in stale:
        sfs, sp = fsspec.core.url_to_fs(path)
        sfs.rm(sp)
    record = {"key": key, "rows": sum(s["rows"] for s in written), "shards": written}
    sh.write_json_atomic(record_path, record)
    return record
