"""A short 2-worker training run submitted with `glide submit` to a real 2-node Ray cluster on this
machine (tests/loopback_cluster.py): one training worker process SIGKILLed mid-run is restarted by Ray
Train (FailureConfig), and the run resumes from its newest checkpoint to the target step.

The data set repeats one image and caption (tests/train_world.py), as in tests/test_train_cli.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from loopback_cluster import LoopbackCluster
from test_train_cli import CONFIG

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

# the same run settings as the local kill test (a repeated image: every batch alike whichever worker reads it)
STEPS = 6


def checkpoint_complete(run: Path, step: int) -> bool:
    return (run / "checkpoints" / f"step-{step:07d}" / "complete.json").is_file()


def train_workers(cluster: LoopbackCluster) -> list[int]:
    """Pids of the Ray Train worker processes on any node of the cluster."""
    found = []
    for node in cluster.nodes:
        for pid in cluster.processes(node):
            try:
                if "RayTrainWorker" in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                continue
    return found


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"glide submit exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_submitted_training_run_resumes_after_a_worker_is_killed(tmp_path):
    from train_world import micro_config, write_world_shards

    dataset = write_world_shards(tmp_path, count=32, rows_per_shard=16, image_size=32, repeat_first=True)
    (tmp_path / "train.yaml").write_text(CONFIG)
    model = micro_config(tmp_path / "micro-base.json")
    run = tmp_path / "run"
    log = tmp_path / "submit.log"
    train = ["train", "base", "--data", dataset, "--config", tmp_path / "train.yaml", "-o", run,
             "--model-config", model, "--workers", 2, "--cpus-per-worker", 1, "--max-steps", STEPS,
             "--save-every", 2]
    with LoopbackCluster(auth=False) as cluster:
        cluster.start_head(num_cpus=1, resources={"head_node": 1})
        cluster.add_worker(num_cpus=4)  # the 2 training workers and Ray Data's readers
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "submit", "--address", cluster.address,
                 "--resources", "head_node=1", "--", *map(str, train)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True, env=cluster.env)
        try:
            wait_for(lambda: checkpoint_complete(run, 2), proc, 600, "the step-2 checkpoint")
            workers = train_workers(cluster)
            assert len(workers) == 2, workers
            assert not checkpoint_complete(run, STEPS), "the run finished before a worker could be killed"
            os.kill(workers[1], signal.SIGKILL)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "resumed from step" in output, output[-4000:]  # the restarted group loaded a checkpoint
    resumed = int(output.split("resumed from step", 1)[1].split()[0])
    assert 2 <= resumed < STEPS
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "step" in json.loads(line)]
    assert steps[-1] == STEPS and checkpoint_complete(run, STEPS)
    assert (run / "exports" / f"step-{STEPS:07d}" / "config.json").is_file()
    meta = json.loads((run / "exports" / f"step-{STEPS:07d}" / "config.json").read_text())
    assert meta["step"] == STEPS and meta["extra"]["images_seen"] == STEPS * 4 * 2
