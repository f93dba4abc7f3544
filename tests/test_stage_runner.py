"""The stage library on a real Ray: per-shard tasks and per-worker actors (model loaded once per actor),
GPU actors when the cluster has GPUs, bounded retries, bad input not retried, a dead actor replaced."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

import shards as sh
from pipeline.stages import FileInfo, ShardJob, ShardResult, ShardTask, StageSpec, run_stage

pytestmark = pytest.mark.integration


def write_outputs(job: ShardJob, n_rows: int, reject_every: int = 3, worker: int = 0) -> ShardResult:
    """A stand-in stage body: rows 0..n-1, every `reject_every`-th rejected as 'odd_one'."""
    uids = [f"{job.name}-{i}" for i in range(n_rows)]
    kept = [u for i, u in enumerate(uids) if i % reject_every]
    dropped = [u for i, u in enumerate(uids) if not i % reject_every]
    shard = sh.write_table(job.pairs_path, pa.table({"uid": pa.array(kept, pa.string())}))
    rejects = sh.write_table(job.rejects_path, pa.table({"uid": pa.array(dropped, pa.string()),
                                                         "reason": pa.array(["odd_one"] * len(dropped))}))
    return ShardResult(input=n_rows, kept=len(kept), rejected={"odd_one": len(dropped)} if dropped else {},
                       shard=FileInfo(name=job.name, **shard), rejects=FileInfo(name=job.name, **rejects),
                       extra={"worker_pid": worker} if worker else {})


def mark(folder: str, prefix: str) -> int:
    """Leave a file in `folder`; returns how many with `prefix` are there now (across processes)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{prefix}-{uuid.uuid4().hex}").touch()
    return len(list(Path(folder).glob(f"{prefix}-*")))


class CountingModel:
    """A per-worker class: 'loading the model' leaves a file, so the test can count loads."""

    def __init__(self, cfg, context):
        mark(cfg["marks"], "load")
        self.cfg, self.device, self.pid = cfg, context.device, os.getpid()

    def process(self, job, report):
        if self.cfg.get("die_once") and mark(self.cfg["marks"], "die") == 1:
            os._exit(1)  # the actor process dies mid-shard, once
        report(job.args[0])
        return write_outputs(job, job.args[0], worker=self.pid)


def flaky_once(job, cfg, report):
    if mark(cfg["marks"], f"try-{job.name}") == 1:
        # What a writer on a node that died leaves: a temporary file nobody will rename.
        Path(job.pairs_path).parent.mkdir(parents=True, exist_ok=True)
        Path(job.pairs_path).with_name(f".{job.name}.0dead0.tmp").write_bytes(b"half a shard")
        raise ConnectionError(f"{job.name}: storage hiccup")
    return write_outputs(job, job.args[0])


def bad_input(job, cfg, report):
    mark(cfg["marks"], "try")
    raise sh.UserError(f"{job.args[0]}: not an Arrow shard")


def tasks(n, rows=5):
    return [ShardTask(name=sh.shard_name(i), rows=rows, key=f"k{i}", args=(rows,)) for i in range(n)]


@pytest.fixture(scope="module")
def ray_local():
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test file
    # One custom resource unit and a node label, for the placement test (the other tests ignore them).
    ray.init(num_cpus=2, include_dashboard=False, address="local", log_to_driver=False, resources={"crawl": 1},
             labels={"node-pool": "cpu"})
    yield
    ray.shutdown()


def check_manifest(ds, n_shards, rows=5):
    manifest = sh.read_manifest(ds)
    counts = manifest["counts"]
    assert counts["input"] == n_shards * rows == counts["kept"] + sum(counts["rejected"].values())
    assert [s["name"] for s in manifest["shards"]] == [sh.shard_name(i) for i in range(n_shards)]
    for kind in ("shards", "rejects"):
        assert all(sh.verify_shard(sh.join(ds, kind, e["name"]), e) for e in manifest[kind])
    return manifest


def test_a_worker_stage_loads_its_model_once_per_actor_not_once_per_shard(ray_local, tmp_path, capsys):
    ds, marks = str(tmp_path / "ds"), str(tmp_path / "marks")
    spec = StageSpec(name="embed", worker=CountingModel, num_cpus=1)
    manifest = run_stage(spec, dataset=ds, tasks=tasks(8), cfg={"marks": marks}, retries=0)
    check_manifest(ds, 8)
    loads = len(list(Path(marks).glob("load-*")))
    pids = {json.loads((Path(ds) / "_progress" / sh.shard_name(i).replace(".arrow", ".json")).read_text())
            ["result"]["extra"]["worker_pid"] for i in range(8)}
    assert loads == len(pids) <= 2  # 2 CPUs -> at most 2 actors, each loaded once for 8 shards
    assert manifest["extra_counts"]["worker_pid"] > 0
    out = capsys.readouterr()
    assert "embed summary" in out.out and "40" in out.out
    assert "\r" not in out.err and "embed: 40/40 rows (100%)" in out.err  # plain lines off a terminal

    # Rerun: every shard verifies, nothing is loaded or run again.
    run_stage(spec, dataset=ds, tasks=tasks(8), cfg={"marks": marks}, retries=0)
    assert len(list(Path(marks).glob("load-*"))) == loads
    assert "8 reused" in capsys.readouterr().out


def test_a_dead_actor_is_replaced_and_its_shard_retried(ray_local, tmp_path):
    ds, marks = str(tmp_path / "ds"), str(tmp_path / "marks")
    spec = StageSpec(name="embed", worker=CountingModel, num_cpus=1, max_workers=1)
    run_stage(spec, dataset=ds, tasks=tasks(3), cfg={"marks": marks, "die_once": True}, retries=1)
    check_manifest(ds, 3)
    assert len(list(Path(marks).glob("load-*"))) == 2  # the first actor and its one replacement


def test_a_failed_task_is_retried_and_every_error_kept_until_it_succeeds(ray_local, tmp_path):
    ds, marks = str(tmp_path / "ds"), str(tmp_path / "marks")
    spec = StageSpec(name="copy", shard_fn=flaky_once)
    run_stage(spec, dataset=ds, tasks=tasks(3), cfg={"marks": marks}, retries=1)
    check_manifest(ds, 3)
    assert not list(Path(ds).rglob("*.tmp")), "a failed attempt's temporary files outlived the stage"
    with pytest.raises(sh.StageFailed, match=r"copy: 2 shard\(s\) failed after 1 attempts: part-00000.arrow, "
                                             r"part-00001.arrow \(last error: ConnectionError"):
        run_stage(spec, dataset=str(tmp_path / "ds2"), tasks=tasks(2), cfg={"marks": str(tmp_path / "m2")},
                  retries=0)
    assert not (tmp_path / "ds2" / "manifest.json").exists()
    assert json.loads((tmp_path / "ds2" / "_progress" / "failures.json").read_text())["part-00000.arrow"][0] \
        .startswith("ConnectionError")


def test_bad_input_is_a_user_error_at_once_not_retried(ray_local, tmp_path):
    ds, marks = str(tmp_path / "ds"), str(tmp_path / "marks")
    with pytest.raises(sh.UserError, match="^5: not an Arrow shard$"):
        run_stage(StageSpec(name="copy", shard_fn=bad_input), dataset=ds, tasks=tasks(1), cfg={"marks": marks},
                  retries=3)
    assert len(list(Path(marks).glob("try-*"))) == 1


def assigned_resources(job, cfg, report):
    """Records what Ray gave the task: its resources, and how many tasks of the stage ran at once."""
    import time

    import ray

    running = mark(cfg["marks"], "start") - len(list(Path(cfg["marks"]).glob("end-*")))
    time.sleep(0.2)
    result = write_outputs(job, job.args[0])
    crawl = ray.get_runtime_context().get_assigned_resources().get("crawl", 0)
    mark(cfg["marks"], "end")
    return ShardResult(**{**result.__dict__, "extra": {"crawl_milli": int(crawl * 1000), "running": running}})


def test_placement_from_the_config_reaches_every_task(ray_local, tmp_path):
    from pipeline.config import PipelineConfig
    from pipeline.stages.execution import slots

    placement = PipelineConfig.model_validate(
        {"ray": {"placement": {"ingest": {"resources": {"crawl": 1}, "node_labels": {"node-pool": "cpu"}}}}}
    ).ray.placement
    spec = StageSpec(name="ingest", shard_fn=assigned_resources).placed(placement)
    assert spec.resources == {"crawl": 1.0} and spec.node_labels == {"node-pool": "cpu"}
    assert StageSpec(name="copy", shard_fn=assigned_resources).placed(placement).resources == {}  # not a stage there
    # 2 CPUs but one unit of 'crawl': one task at a time.
    assert slots(spec, {"CPU": 2.0, "crawl": 1.0}, 0) == 1 and slots(spec, {"CPU": 8.0, "crawl": 3.0}, 0) == 3
    ds, marks = str(tmp_path / "ds"), str(tmp_path / "marks")
    run_stage(spec, dataset=ds, tasks=tasks(3), cfg={"marks": marks}, retries=0)
    check_manifest(ds, 3)
    extra = [json.loads((Path(ds) / "_progress" / sh.shard_name(i).replace(".arrow", ".json")).read_text())
             ["result"]["extra"] for i in range(3)]
    assert [e["crawl_milli"] for e in extra] == [1000] * 3 and max(e["running"] for e in extra) == 1


def test_dispatchers_follow_the_cluster_as_nodes_join(ray_local, monkeypatch):
    """An autoscaler adds nodes while a stage runs: more tasks go in flight, more actors start."""
    import ray

    from pipeline.stages import execution

    spec = StageSpec(name="copy", shard_fn=flaky_once)
    tasks_out = execution.TaskDispatcher(spec, {}, None)
    actors = execution.ActorDispatcher(StageSpec(name="embed", worker=CountingModel, max_workers=3), {}, None, 10)
    try:
        assert tasks_out.capacity == 4 and actors.workers == 2  # 2 CPUs
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
        assert tasks_out.has_room(4) is False and actors.workers == 2  # not looked at again yet
        monkeypatch.setattr(execution, "RESOURCES_RECHECK_S", 0.0)
        assert tasks_out.has_room(4) is True and tasks_out.capacity == 16
        actors.has_room(0)
        assert actors.workers == 3 and len(actors.idle) == 3  # max_workers caps the pool
    finally:
        actors.shutdown()


GPU_PROBE = """
import json, sys
import ray
from ray import cloudpickle
sys.path.insert(0, sys.argv[1])
import test_stage_runner as t
cloudpickle.register_pickle_by_value(t)
cloudpickle.register_pickle_by_value(sys.modules["__main__"])
from pipeline.stages import StageSpec, run_stage
ray.init(num_cpus=2, num_gpus=int(sys.argv[3]), include_dashboard=False, address="local", log_to_driver=False)

class DeviceModel(t.CountingModel):
    def process(self, job, report):
        t.mark(self.cfg["marks"], "device-" + self.device)
        return super().process(job, report)

spec = StageSpec(name="embed", worker=DeviceModel, num_cpus=1, num_gpus="auto")
run_stage(spec, dataset=sys.argv[2] + "/ds", tasks=t.tasks(4), cfg={"marks": sys.argv[2] + "/marks"}, retries=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("gpus,device,actors", [(1, "cuda", 1), (0, "cpu", 2)])
def test_worker_actors_take_a_gpu_each_when_the_cluster_has_gpus(tmp_path, gpus, device, actors):
    proc = subprocess.run([sys.executable, "-c", GPU_PROBE, str(Path(__file__).parent), str(tmp_path), str(gpus)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marks = tmp_path / "marks"
    assert len(list(marks.glob(f"device-{device}-*"))) == 4  # every shard ran on the expected device
    assert len(list(marks.glob("load-*"))) <= actors
