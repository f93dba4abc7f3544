"""The pairs and rejects schemas (version 1) and the dataset layout (ARCHITECTURE "Shards").

    DATASET/manifest.json              written last; its presence means the stage finished
    DATASET/shards/part-00000.arrow    Arrow IPC file format, pairs schema
    DATASET/rejects/part-00000.arrow   every dropped pair with its reason

Columns a later stage adds (clip_embedding, score_<filter>) are appended, never renamed.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import pyarrow as pa

FORMAT = "glide-shards"
VERSION = 1
MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
REJECTS_DIR = "rejects"

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("image_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("source", pa.string()),
    ],
    metadata={b"glide.schema": b"pairs", b"glide.version": b"1"},
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("score", pa.float32(), nullable=True),
    ],
    metadata={b"glide.schema": b"rejects", b"glide.version": b"1"},
)


def compute_uid(url: str, caption: Optional[str]) -> str:
    """32 hex chars: the first 128 bits of sha256(url + "\\n" + caption); stable across stages."""
    text = f"{url}\n{caption or ''}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def shard_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def clip_embedding_field(dim: int) -> pa.Field:
    """The column the embed stage appends: fixed_size_list<float16, dim>."""
    return pa.field("clip_embedding", pa.list_(pa.float16(), dim))


def score_field(filter_name: str) -> pa.Field:
    """The column the filter stage appends for one filter."""
    return pa.field(f"score_{filter_name}", pa.float32())


def extend_schema(schema: pa.Schema, *fields: pa.Field) -> pa.Schema:
    """`schema` with `fields` appended (replacing same-named ones in place), metadata kept."""
    out = schema
    for f in fields:
        i = out.get_field_index(f.name)
        out = out.set(i, f) if i >= 0 else out.append(f)
    return out.with_metadata(schema.metadata)
