"""The stage runner's typed records: what a unit of per-shard work gets and what it returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional, Protocol


@dataclass(frozen=True)
class FileInfo:
    """One file a task wrote atomically, as a manifest lists it."""

    name: str
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, d: dict) -> "FileInfo":
        return cls(name=d["name"], rows=int(d["rows"]), bytes=int(d["bytes"]), sha256=d["sha256"])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShardResult:
    """What one output shard holds: every input row is kept or rejected with a reason.

    `extra`: stage-specific per-shard counts (e.g. rows removed per filter), summed over shards
    into the manifest by the runner.
    """

    input: int
    kept: int
    rejected: dict[str, int]
    shard: FileInfo
    rejects: FileInfo
    extra: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        n_rejected = sum(self.rejected.values())
        if self.input != self.kept + n_rejected:
            raise ValueError(f"{self.shard.name}: input {self.input} != kept {self.kept} + rejected {n_rejected}")
        if self.shard.rows != self.kept or self.rejects.rows != n_rejected:
            raise ValueError(f"{self.shard.name}: files hold {self.shard.rows} kept / {self.rejects.rows} rejected "
                             f"rows, counts say {self.kept} / {n_rejected}")

    @classmethod
    def from_dict(cls, d: dict) -> "ShardResult":
        return cls(input=int(d["input"]), kept=int(d["kept"]), rejected={k: int(v) for k, v in d["rejected"].items()},
                   shard=FileInfo.from_dict(d["shard"]), rejects=FileInfo.from_dict(d["rejects"]),
                   extra={k: int(v) for k, v in d.get("extra", {}).items()})

    def to_dict(self) -> dict:
        return {"input": self.input, "kept": self.kept, "rejected": dict(self.rejected),
                "shard": self.shard.to_dict(), "rejects": self.rejects.to_dict(), "extra": dict(self.extra)}


@dataclass(frozen=True)
class ShardJob:
    """One unit of per-shard work, as the stage's function or worker receives it.

    `args`: the stage's own inputs for this shard (e.g. the input shard's path);
    `pairs_path` / `rejects_path`: where to write the two outputs (atomically).
    """

    name: str
    args: tuple
    pairs_path: str
    rejects_path: str


@dataclass
class ShardTask:
    """The driver's view of one output shard: what to run and its identity for resume."""

    name: str                  # output shard file name, e.g. "part-00003.arrow"
    rows: int                  # input rows (progress total)
    key: str                   # identity of input + config; a record with another key is stale
    args: tuple = ()           # ShardJob.args
    errors: list[str] = field(default_factory=list)


Report = Callable[[int], None]
"""report(n): n more input rows are done (progress), callable from inside a task or actor."""


@dataclass(frozen=True)
class WorkerContext:
    """What a per-worker class is told about where it runs: `device` is "cuda" on a GPU actor."""

    device: str
    gpu_ids: tuple


class ShardWorker(Protocol):
    """A per-worker class for stages that hold a model: built once per actor, then called per shard.

        worker = Cls(cfg, context)     # load the model once (context.device: "cuda" or "cpu")
        worker.process(job, report) -> ShardResult
    """

    def process(self, job: ShardJob, report: Report) -> ShardResult: ...


@dataclass(frozen=True)
class StageSpec:
    """How a stage runs its per-shard work on Ray.

    Exactly one of `shard_fn(job, cfg, report) -> ShardResult` (a Ray task per shard) or
    `worker` (a ShardWorker class: one Ray actor per worker, the model loaded once per actor).
    `num_gpus`: per actor; "auto" asks for one GPU per actor when the cluster has GPUs and none
    otherwise. `max_workers`: most actors (default: as many as the cluster's CPUs or GPUs allow).
    `resources` / `node_labels`: custom Ray resources and a node label selector every task or actor
    asks for (from the pipeline config's `ray.placement.<stage>`; empty: any node).
    """

    name: str
    shard_fn: Optional[Callable[[ShardJob, dict, Report], ShardResult]] = None
    worker: Optional[type] = None
    num_cpus: float = 1.0
    num_gpus: Any = 0  # float or "auto"
    max_workers: Optional[int] = None
    resources: dict = field(default_factory=dict)
    node_labels: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.shard_fn is None) == (self.worker is None):
            raise ValueError(f"stage {self.name}: give exactly one of shard_fn or worker")

    def placed(self, placement) -> "StageSpec":
        """This spec with the resources and node labels `placement` (a PlacementConfig) gives its stage."""
        if self.name not in type(placement).model_fields:  # a stage the config does not place
            return self
        entry = getattr(placement, self.name)
        return replace(self, resources=dict(entry.resources), node_labels=dict(entry.node_labels))
