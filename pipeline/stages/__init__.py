"""The stage library: every stage's per-shard work runs through `run_stage`.

A stage declares a `StageSpec` (a per-shard function, or a per-worker class for stages that hold
a model), plans one `ShardTask` per output shard and gets resume, bounded retries, progress, the
summary table and the manifest written last. See runner.py.
"""
from pipeline.stages.runner import run_stage
from pipeline.stages.types import (FileInfo, Report, ShardJob, ShardResult, ShardTask, ShardWorker, StageSpec,
                                   WorkerContext)

__all__ = ["run_stage", "FileInfo", "Report", "ShardJob", "ShardResult", "ShardTask", "ShardWorker", "StageSpec",
           "WorkerContext"]
