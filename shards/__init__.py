"""The shard contract: the one neutral package every other package may import.

Schema and versions, reader (streaming, column projection, row counts), atomic writer,
manifest with the input = kept + rejected check, digests, atomic files, the user-error type
and the progress reporter. It imports only the standard library, pyarrow, fsspec and (for a
progress bar on a terminal) tqdm; never `pipeline`, `training`, `filtering` or `evaluation`.
"""
from shards.digests import FileDigest, bytes_sha256, file_digest
from shards.errors import StageFailed, UserError
from shards.files import atomic_open, exists, join, remove, url_to_fs, write_bytes_atomic, write_json_atomic
from shards.manifest import check_counts, input_ref, manifest_digest, read_manifest, write_manifest
from shards.reader import (count_rows, dataset_rows, iter_record_batches, iter_shard_batches, list_shards,
                           read_schema, read_table, verify_shard)
from shards.schema import (FORMAT, MANIFEST, PAIRS_SCHEMA, REJECTS_DIR, REJECTS_SCHEMA, SHARDS_DIR, VERSION,
                           clip_embedding_field, compute_uid, extend_schema, score_field, shard_name)
from shards.progress import Progress
from shards.writer import ShardWriter, write_table

__all__ = [
    "FileDigest", "bytes_sha256", "file_digest", "StageFailed", "UserError", "atomic_open", "exists", "join",
    "remove", "url_to_fs", "write_bytes_atomic", "write_json_atomic", "check_counts", "input_ref",
    "manifest_digest", "read_manifest", "write_manifest", "count_rows", "dataset_rows", "iter_record_batches",
    "iter_shard_batches", "list_shards", "read_schema", "read_table", "verify_shard", "FORMAT", "MANIFEST",
    "PAIRS_SCHEMA", "REJECTS_DIR", "REJECTS_SCHEMA", "SHARDS_DIR", "VERSION", "clip_embedding_field",
    "compute_uid", "extend_schema", "score_field", "shard_name", "ShardWriter", "write_table", "Progress",
]
