"""How per-shard work reaches Ray: a task per shard, or a pool of actors that each hold a model.

Both report progress through one zero-CPU counter actor, batched to a call per ~0.5 s.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Optional

from pipeline.stages.types import ShardJob, ShardResult, StageSpec, WorkerContext


class ProgressCounter:
    """Ray actor (0 CPUs): tasks add rows as they go; the driver reads the total."""

    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def get(self) -> int:
        return self.rows


class _Reporter:
    """report(n) inside a task: batches row counts into one actor call per ~0.5 s."""

    def __init__(self, counter):
        self.counter, self.pending, self.last = counter, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if self.counter is not None and self.pending and now - self.last > 0.5:
            self.counter.add.remote(self.pending)
            self.pending, self.last = 0, now

    def flush(self) -> None:
        if self.counter is not None and self.pending:
            self.counter.add.remote(self.pending)
            self.pending = 0


def _checked(result: Any, job: ShardJob) -> ShardResult:
    if not isinstance(result, ShardResult):
        raise TypeError(f"{job.name}: stage returned {type(result).__name__}, not a ShardResult")
    return result


def run_shard_fn(fn, job: ShardJob, cfg: dict, counter) -> ShardResult:
    """Body of the per-shard Ray task."""
    report = _Reporter(counter)
    try:
        return _checked(fn(job, cfg, report), job)
    finally:
        report.flush()


def _context() -> WorkerContext:
    import ray

    gpu_ids = tuple(ray.get_gpu_ids()) if ray.is_initialized() else ()
    return WorkerContext(device="cuda" if gpu_ids else "cpu", gpu_ids=gpu_ids)


class WorkerHost:
    """Ray actor holding one instance of a stage's ShardWorker class, built once."""

    def __init__(self, worker_cls: type, cfg: dict):
        # A failed load (a missing model file) is raised from process() with its own type, so the
        # driver sees the UserError itself instead of a bare "actor died".
        self.worker, self.load_error = None, None
        try:
            self.worker = worker_cls(cfg, _context())
        except Exception as e:
            self.load_error = e

    def process(self, job: ShardJob, counter) -> ShardResult:
        if self.load_error is not None:
            raise self.load_error
        report = _Reporter(counter)
        try:
            return _checked(self.worker.process(job, report), job)
        finally:
            report.flush()


def gpus_per_worker(spec: StageSpec, cluster: dict) -> float:
    if spec.num_gpus == "auto":
        return 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    return float(spec.num_gpus or 0)


def slots(spec: StageSpec, cluster: dict, gpus: float) -> int:
    """How many of the stage's tasks or actors the cluster's resources hold at once (at least 1).

    Custom resources of the stage's placement count too; node labels cannot be counted here."""
    n = int(cluster.get("CPU", 1) / max(spec.num_cpus, 0.01))
    if gpus:
        n = min(n, int(cluster.get("GPU", 0) / gpus))
    for name, amount in spec.resources.items():
        n = min(n, int(cluster.get(name, 0) / amount))
    return max(1, n)


def ray_options(spec: StageSpec, gpus: float) -> dict:
    """Options of the stage's Ray tasks or actors: CPUs, GPUs, and its placement."""
    options = {"num_cpus": spec.num_cpus, "num_gpus": gpus}
    if spec.resources:
        options["resources"] = dict(spec.resources)
    if spec.node_labels:
        options["label_selector"] = dict(spec.node_labels)
    return options


def on_this_node() -> dict:
    """Options that keep an actor on the driver's node, so it lives exactly as long as the driver's
    node does: losing a worker node must not take the stage's bookkeeping with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}


# How often a dispatcher looks at the cluster's resources again: an autoscaler adds (and a lost node
# removes) nodes while a stage runs, and the work in flight follows.
RESOURCES_RECHECK_S = 10.0


class TaskDispatcher:
    """One Ray task per shard; at most ~2 per CPU in flight, so the queue stays bounded."""

    def __init__(self, spec: StageSpec, cfg: dict, counter):
        import ray

        self.spec, self.cfg, self.counter = spec, cfg, counter
        cluster = ray.cluster_resources()
        self.gpus = gpus_per_worker(spec, cluster)
        self.remote = ray.remote(max_retries=0, **ray_options(spec, self.gpus))(run_shard_fn)
        self.capacity = slots(spec, cluster, self.gpus) * 2
        self.checked = time.monotonic()

    def has_room(self, in_flight: int) -> bool:
        import ray

        if time.monotonic() - self.checked > RESOURCES_RECHECK_S:
            self.capacity = slots(self.spec, ray.cluster_resources(), self.gpus) * 2
            self.checked = time.monotonic()
        return in_flight < self.capacity

    def submit(self, job: ShardJob):
        return self.remote.remote(self.spec.shard_fn, job, self.cfg, self.counter)

    def done(self, ref, failed: bool) -> None:
        pass

    def shutdown(self) -> None:
        pass


class ActorDispatcher:
    """A pool of WorkerHost actors; each gets one shard at a time, and a dead one is replaced."""

    def __init__(self, spec: StageSpec, cfg: dict, counter, n_tasks: int):
        import ray

        self.spec, self.cfg, self.counter = spec, cfg, counter
        cluster = ray.cluster_resources()
        gpus = gpus_per_worker(spec, cluster)
        self.n_tasks = n_tasks
        self.actor_cls = ray.remote(max_restarts=0, **ray_options(spec, gpus))(WorkerHost)
        self.idle: deque = deque()
        self.busy: dict[Any, Any] = {}
        self.workers = 0
        self.gpus_per_worker = gpus
        self._grow(cluster)

    def _new_actor(self):
        return self.actor_cls.remote(self.spec.worker, self.cfg)

    def _grow(self, cluster: dict) -> None:
        """Up to as many actors as the cluster holds (never more than shards or max_workers)."""
        room = slots(self.spec, cluster, self.gpus_per_worker)
        target = max(1, min(self.n_tasks, room, self.spec.max_workers or room))
        while self.workers < target:
            self.idle.append(self._new_actor())
            self.workers += 1
        self.checked = time.monotonic()

    def has_room(self, in_flight: int) -> bool:
        import ray

        if time.monotonic() - self.checked > RESOURCES_RECHECK_S:
            self._grow(ray.cluster_resources())
        return bool(self.idle)

    def submit(self, job: ShardJob):
        actor = self.idle.popleft()
        ref = actor.process.remote(job, self.counter)
        self.busy[ref] = actor
        return ref

    def done(self, ref, failed: bool) -> None:
        import ray

        actor = self.busy.pop(ref)
        if failed and not _alive(actor):
            ray.kill(actor)
            actor = self._new_actor()  # the model is loaded again only for the replacement
        self.idle.append(actor)

    def shutdown(self) -> None:
        import ray

        for actor in list(self.idle) + list(self.busy.values()):
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass


def _alive(actor) -> bool:
    import ray

    try:
        ray.get(actor.__ray_ready__.remote(), timeout=30)
        return True
    except Exception:
        return False


def make_dispatcher(spec: StageSpec, cfg: dict, counter, n_tasks: int, ):
    if spec.worker is not None:
        return ActorDispatcher(spec, cfg, counter, n_tasks)
    return TaskDispatcher(spec, cfg, counter)


def short_error(e: BaseException) -> str:
    """One line for a Ray task error: the underlying exception's type and message."""
    cause: Optional[BaseException] = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(cause).__name__}: {last}"[:300]
