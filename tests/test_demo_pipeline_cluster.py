"""Issue 12's measurable bar on the demo's own pipeline: `glide run configs/demo.yaml` on the embedded Ray
and `glide submit -- run` of the same config on a real 2-node Ray cluster on this machine give the same
dataset uids and manifest counts (crawl, embeddings, filtered pairs). The data stages only (--until
label): training and sampling write no datasets. About 10 minutes on 2 cores, so `make test` leaves it
to `make test-slow` (marker demo_scale); tests/test_pipeline_run_cluster.py checks the same on a tiny
pipeline in every run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import shards as sh
from loopback_cluster import LoopbackCluster, free_port
from pipeline_run_world import uids

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.demo_scale, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]
DATASETS = ("dataset", "dataset-emb", "dataset-filtered")


def demo_config(path: Path, out: Path, port: int) -> Path:
    """configs/demo.yaml with its outputs under OUT, the shipped CLIP by absolute path (a submitted job
    runs in a packaged copy of the working directory, which leaves checkpoints/ out) and the world served
    on PORT: a pair's uid derives from its URL, so both runs must crawl the same addresses."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["run"]["out"] = str(out)
    config["sample_world"]["port"] = port
    config["embed"]["clip"] = str(REPO / config["embed"]["clip"])
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_demo_pipeline_gives_the_same_datasets_embedded_and_on_a_two_node_cluster(tmp_path):
    port = free_port()   # the two runs serve their worlds one after the other
    configs = {name: demo_config(tmp_path / f"{name}.yaml", tmp_path / name, port) for name in ("embedded", "cluster")}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    local = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(configs["embedded"]), "--until", "label"],
                           cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    embedded_s = time.monotonic() - started
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    with LoopbackCluster(auth=False) as cluster:
        cluster.start_head(num_cpus=1, resources={"head_node": 1})
        cluster.add_worker(num_cpus=2)
        started = time.monotonic()
        submitted = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "submit", "--address", cluster.address, "--resources", "head_node=1",
             "--", "run", str(configs["cluster"]), "--until", "label"],
            cwd=REPO, capture_output=True, text=True, timeout=1800, env=cluster.env)
        cluster_s = time.monotonic() - started
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "SUCCEEDED" in submitted.stderr
    for name in DATASETS:
        embedded, on_cluster = str(tmp_path / "embedded" / name), str(tmp_path / "cluster" / name)
        counts = sh.read_manifest(embedded)["counts"]
        assert sh.read_manifest(on_cluster)["counts"] == counts, name
        for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR):
            got = uids(on_cluster, kind)
            assert len(got) == len(set(got)) and set(got) == set(uids(embedded, kind)), f"{name} {kind}"
        print(f"\n{name}: {counts}")
    print(f"embedded {embedded_s:.0f} s, submitted to the 2-node cluster {cluster_s:.0f} s")
