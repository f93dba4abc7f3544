"""A pipeline whose datasets live in s3://: `glide run` through the real s3fs client against moto's
S3-compatible server on 127.0.0.1. The URL list, every dataset and the filters are objects in the
bucket; nothing of them is written on this machine and no manifest names a path on it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import shards as sh
from conftest import run_glide
from pipeline_run_world import served_world, uids, write_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.integration]
BUCKET = "glide-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's server (its own process, as an S3 service would be) on loopback with one bucket; yields the
    environment that points s3fs, here and in the glide processes and their Ray workers, at it."""
    pytest.importorskip("s3fs")
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 300  # moto loads its services lazily: slow on a busy machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).close()
                break
            except urllib.error.HTTPError:  # it answers: up
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.5)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield env
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.timeout(900)
def test_a_pipeline_on_s3_runs_end_to_end_and_is_reused(s3, tmp_path_factory):
    import s3fs

    fs = s3fs.S3FileSystem()
    with served_world(tmp_path_factory.mktemp("s3-pipeline")) as root:
        fs.put(str(root / "urls.parquet"), f"{BUCKET}/lists/urls.parquet")
        data = f"s3://{BUCKET}/pipeline"
        # paths relative to where glide runs (as on a cluster, where the checkout is the working directory)
        run = {"out": "out", "datasets": data, "lists": [f"s3://{BUCKET}/lists/urls.parquet"],
               "labels": "labels.csv"}
        config = write_pipeline(root / "pipeline.yaml", run, embed={"clip": "clip"})
        result = run_glide("run", "pipeline.yaml", timeout=840, env=s3, cwd=root)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for command in ("ingest", "embed", "fit-filters", "filter"):
            assert f"== glide run: {command} " in result.stdout

        dataset, emb, filtered = (f"{data}/{n}" for n in ("dataset", "dataset-emb", "dataset-filtered"))
        crawl = sh.read_manifest(dataset)
        assert crawl["inputs"][0]["path"] == f"s3://{BUCKET}/lists/urls.parquet"
        assert crawl["counts"]["kept"] == len(uids(dataset)) > 0.8 * 48
        assert sh.read_manifest(emb)["inputs"] == [sh.input_ref(dataset)]
        assert sorted(uids(emb)) == sorted(uids(dataset))
        manifest = sh.read_manifest(filtered)
        assert manifest["inputs"] == [sh.input_ref(emb)] and manifest["config"]["filters"] == f"{data}/filters"
        assert sorted(uids(filtered) + uids(filtered, sh.REJECTS_DIR)) == sorted(uids(emb))
        assert manifest["counts"]["input"] == manifest["counts"]["kept"] + sum(manifest["counts"]["rejected"].values())
        for d in (dataset, emb, filtered):
            for kind in (sh.SHARDS_DIR, sh.REJECTS_DIR):
                assert all(sh.verify_shard(sh.join(d, kind, e["name"]), e) for e in sh.read_manifest(d)[kind])
            text = fs.cat(f"{d}/manifest.json".removeprefix("s3://")).decode()
            assert str(root) not in text and "/tmp" not in text, f"{d}: a path on this machine in its manifest"
        assert fs.exists(f"{BUCKET}/pipeline/filters/index.json")
        # on this machine only the pipeline's records
        assert sorted(p.name for p in (root / "out").iterdir()) == ["pipeline-state"]

        again = run_glide("run", config.name, "--dry-run", timeout=300, env=s3, cwd=root)
        assert again.returncode == 0 and "0 to run, 4 reused" in again.stdout, again.stdout + again.stderr
