"""Orchestration: CLI, config, Ray session, stage runner, shard I/O, ingest.

Kept import-light: `glide --help` must not pay for torch or Ray. The libraries
(`filtering`, `training`, `evaluation`) may import only the leaf modules
`pipeline.errors` and `pipeline.shards` (stdlib/pyarrow only), never the rest.
"""
