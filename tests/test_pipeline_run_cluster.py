"""The measurable bar of `glide run`: the same pipeline through `glide run` on the embedded Ray and through
`glide submit -- glide run` on a real 2-node Ray cluster on this machine (tests/loopback_cluster.py) gives
the same dataset uids and manifest counts at every stage (ingest -> embed -> fit-filters -> filter)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shards as sh
from loopback_cluster import LoopbackCluster
from pipeline_run_world import served_world, uids, write_pipeline

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]
DATASETS = ("dataset", "dataset-emb", "dataset-filtered")


def test_glide_run_on_embedded_ray_and_submitted_to_a_cluster_give_the_same_datasets(tmp_path):
    with served_world(tmp_path) as root:
        configs = {}
        for name in ("embedded", "cluster"):
            run = {"out": str(root / name), "lists": [str(root / "urls.parquet")], "labels": str(root / "labels.csv")}
            configs[name] = write_pipeline(root / f"{name}.yaml", run, embed={"clip": str(root / "clip")})
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        started = time.monotonic()
        # the embedded run goes on while the cluster starts
        local = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(configs["embedded"])], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            with LoopbackCluster(auth=False) as cluster:
                cluster.start_head(num_cpus=1, resources={"head_node": 1})
                cluster.add_worker(num_cpus=2)
                submitted = subprocess.run(
                    [sys.executable, "-m", "pipeline.cli", "submit", "--address", cluster.address,
                     "--resources", "head_node=1", "--", "run", str(configs["cluster"])],
                    cwd=REPO, capture_output=True, text=True, timeout=1200, env=cluster.env)
            cluster_s = time.monotonic() - started
            out, _ = local.communicate(timeout=1200)
        finally:
            if local.poll() is None:
                local.kill()
                local.communicate()
    assert local.returncode == 0, out[-3000:]
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "== glide run: filter (4/4)" in submitted.stdout and "SUCCEEDED" in submitted.stderr
    for name in DATASETS:
        embedded, on_cluster = str(root / "embedded" / name), str(root / "cluster" / name)
        assert sh.read_manifest(on_cluster)["counts"] == sh.read_manifest(embedded)["counts"], name
        for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR):
            got = uids(on_cluster, kind)
            assert len(got) == len(set(got)) and set(got) == set(uids(embedded, kind)), f"{name} {kind}"
    print(f"\nsubmitted pipeline (with the cluster's start) {cluster_s:.0f} s")
