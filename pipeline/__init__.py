"""Orchestration: CLI, config, Ray session, stage library, ingest, sample world.

Kept import-light: `glide --help` must not pay for torch or Ray. `pipeline` may import the
libraries (`filtering`, `training`, `evaluation`, `cluster`) and the contract package `shards`;
none of them imports `pipeline` (tests/test_dependency_direction.py).
"""
