"""`glide submit` on a real 2-node Ray cluster on this machine (tests/loopback_cluster.py), with Ray's
token authentication on: a submitted ingest and a submitted filter equal local runs; bad input comes
back as exit code 2; the worker node SIGKILLed mid-ingest at three points loses and duplicates nothing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards as sh
from filter_world import write_embeddings_dataset
from loopback_cluster import LoopbackCluster

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.integration]

INGEST = """\
ingest:
  image_size: 16
  allow_private_networks: true
  timeout: 8
  threads: 2
  shard_retries: 3
"""
# The same crawl everywhere; the cluster configs differ only in where the tasks may run, which is not
# part of the stage's config (so the manifests' configs agree too).
LOCAL = "ray:\n  num_cpus: 2\n" + INGEST
ON_THE_WORKER = ("ray:\n  placement:\n    ingest:\n      resources: {worker_node: 1}\n"
                 "    filter:\n      resources: {worker_node: 1}\n" + INGEST)
ANYWHERE = INGEST
SHARD_SIZE = 4
FILTER_ROWS = 800
SLOW_ROWS = 6  # each a 1 s response, one per shard: every crawl task lasts long enough to be killed in


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A served sample world (with its bad rows, plus slow rows) and the configs to crawl it."""
    from pipeline.config import SampleWorldConfig
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    root = tmp_path_factory.mktemp("cluster")
    generate_world(SampleWorldConfig(count=14, seed=11, image_size=32), root / "world")
    with SampleWorldServer(root / "world", slow_seconds=1.0) as server:
        base = pq.read_table(write_url_list(root / "world", server.base_url, path=root / "base.parquet"))
        rows = base.to_pylist()
        slow = [{"url": f"{server.base_url}/bad/slow.jpg?n={k}", "caption": f"a slow picture, number {k}",
                 "image_id": None} for k in range(SLOW_ROWS)]
        for k, row in enumerate(slow):  # one slow row in each input shard
            rows.insert(k * SHARD_SIZE, row)
        urls = root / "urls.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=base.schema), urls)
        configs = {}
        for name, text in (("local", LOCAL), ("worker", ON_THE_WORKER), ("anywhere", ANYWHERE)):
            configs[name] = root / f"{name}.yaml"
            configs[name].write_text(text)
        # The filter stage's input: an embeddings dataset (tests/filter_world.py) and filters for it.
        embeddings, _, truth = write_embeddings_dataset(root / "emb", FILTER_ROWS, shards=4, images=False)
        write_filters(root / "filters", embeddings, truth)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # The local reference runs start now and run while the cluster starts.
        local = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *ingest_args(urls, root / "local", configs["local"])],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        local_filter = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli",
             *filter_args(embeddings, root / "filters", root / "filtered-local", configs["local"])],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            yield {"root": root, "urls": urls, "rows": len(rows), "configs": configs, "local": local,
                   "embeddings": embeddings, "local_filter": local_filter}
        finally:
            for proc in (local, local_filter):
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()


def write_filters(folder, embeddings, truth) -> None:
    """An RBF-SVM per category fitted here on half the pairs (glide fit-filters has its own tests)."""
    import numpy as np
    from sklearn.svm import SVC

    from filter_world import CATEGORIES, MODEL
    from filtering.filter_files import save_filters
    from filtering.svm_filter import SvmFilter

    x = np.concatenate([b.column("clip_embedding").flatten().to_numpy().reshape(len(b), -1)
                        for b in sh.iter_record_batches(str(embeddings), ["clip_embedding"])]).astype(np.float32)
    half = len(x) // 2
    filters = []
    for name in CATEGORIES:
        labels = np.asarray(truth[name], dtype=bool)
        svc = SVC(C=10.0).fit(x[:half], labels[:half])
        filters.append(SvmFilter.from_svc(name, svc, threshold=0.0, embedding_model=MODEL,
                                          held_out_scores=svc.decision_function(x[half:]),
                                          held_out_labels=labels[half:]))
    save_filters(str(folder), filters)


def filter_args(embeddings, filters, out, config):
    return ["filter", str(embeddings), "--filters", str(filters), "-o", str(out), "-c", str(config)]


def ingest_args(urls, out, config):
    return ["ingest", str(urls), "-o", str(out), "-c", str(config), "--shard-size", str(SHARD_SIZE)]


@pytest.fixture(scope="module")
def local_result(world):
    out, err = world["local"].communicate(timeout=300)
    assert world["local"].returncode == 0, err[-3000:]
    return world["root"] / "local"


@pytest.fixture(scope="module")
def filter_reference(world):
    out, err = world["local_filter"].communicate(timeout=300)
    assert world["local_filter"].returncode == 0, err[-3000:]
    return world["root"] / "filters", world["root"] / "filtered-local"


@pytest.fixture(scope="module")
def cluster(world):
    """Head: 1 CPU and `head_node` (the job drivers run there); workers: 2 CPUs and `worker_node`."""
    with LoopbackCluster(auth=True) as c:
        started = time.monotonic()
        c.start_head(num_cpus=1, resources={"head_node": 1})
        c.workers = [c.add_worker(num_cpus=2, resources={"worker_node": 2})]
        c.start_seconds = time.monotonic() - started
        yield c


def live_worker(cluster):
    """The cluster's worker node, started anew if the last one was killed."""
    if cluster.workers[-1].process.poll() is not None:
        cluster.workers.append(cluster.add_worker(num_cpus=2, resources={"worker_node": 2}))
    return cluster.workers[-1]


def submit_cmd(cluster, *argv, options=()):
    return [sys.executable, "-m", "pipeline.cli", "submit", "--address", cluster.address,
            "--resources", "head_node=1", *options, "--", *map(str, argv)]


def submit(cluster, *argv, env=None, timeout=300):
    return subprocess.run(submit_cmd(cluster, *argv), capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**cluster.env, **(env or {})})


def uids(dataset, kind):
    return [u for b in sh.iter_record_batches(str(dataset), columns=["uid"], kind=kind)
            for u in b.column("uid").to_pylist()]


def assert_same_dataset(dataset, reference, rows):
    """Nothing lost, nothing twice: input = kept + rejected, unique uids, the reference's uid sets
    and counts, every shard verifying, no temporary file left."""
    manifest = sh.read_manifest(str(dataset))
    counts = manifest["counts"]
    assert counts["input"] == rows == counts["kept"] + sum(counts["rejected"].values())
    assert counts == sh.read_manifest(str(reference))["counts"]
    for kind in ("shards", "rejects"):
        got = uids(dataset, kind)
        assert len(got) == len(set(got)), f"duplicate uids in {kind}"
        assert set(got) == set(uids(reference, kind))
        assert all(sh.verify_shard(str(dataset / kind / e["name"]), e) for e in manifest[kind])
    assert manifest["config"] == sh.read_manifest(str(reference))["config"]
    assert not list(dataset.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.timeout(420)
def test_a_submitted_ingest_equals_a_local_run(world, local_result, cluster):
    out = world["root"] / "submitted"
    started = time.monotonic()
    # Every crawl task must run on the worker node (ray.placement.ingest asks for `worker_node`); the
    # driver on the head (--resources head_node=1).
    proc = submit(cluster, *ingest_args(world["urls"], out, world["configs"]["worker"]))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_dataset(out, local_result, world["rows"])
    # The job's output streamed here: the stage's summary, then the job's end.
    assert "ingest summary" in proc.stdout and f"dataset: {out}" in proc.stdout
    assert "SUCCEEDED" in proc.stderr.splitlines()[-1]
    assert "INFO" not in proc.stderr, proc.stderr  # Ray's client chatter stays out unless --debug
    print(f"\ncluster start {cluster.start_seconds:.1f} s; submitted ingest {seconds:.1f} s")


def scores_by_uid(dataset):
    columns = [f"score_{n}" for n in ("people", "violence", "hate")]
    return {row["uid"]: tuple(row[c] for c in columns)
            for b in sh.iter_record_batches(str(dataset), columns=["uid", *columns]) for row in b.to_pylist()}


@pytest.mark.timeout(300)
def test_a_submitted_filter_equals_a_local_run(world, filter_reference, cluster):
    """The filter stage's actors (ray.placement.filter: `worker_node`) on the worker node."""
    filters, reference = filter_reference
    out = world["root"] / "filtered-submitted"
    started = time.monotonic()
    proc = submit(cluster, *filter_args(world["embeddings"], filters, out, world["configs"]["worker"]))
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_dataset(out, reference, FILTER_ROWS)
    assert scores_by_uid(out) == scores_by_uid(reference)
    print(f"\nsubmitted filter {seconds:.1f} s")


@pytest.mark.timeout(300)
def test_bad_input_comes_back_as_exit_2_and_the_cluster_wants_its_token(world, cluster):
    missing = world["root"] / "no-such-list.parquet"
    proc = submit(cluster, "ingest", missing, "-o", world["root"] / "never")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"glide: error: {missing}: URL list not found" in proc.stdout  # the remote command's own line
    assert "(exit code 2)" in proc.stderr.splitlines()[-1]

    # (A command that cannot parse never leaves this machine: tests/test_job_submission.py.)
    glide = [sys.executable, "-m", "pipeline.cli", "jobs"]
    listing = subprocess.run([*glide, "list", "--json", "--address", cluster.address], capture_output=True,
                             text=True, cwd=REPO, env=cluster.env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    failed = [job for job in map(json.loads, listing.stdout.splitlines())
              if job["metadata"]["glide_command"].startswith(f"ingest {missing} -o")]
    assert [(job["status"], job["driver_exit_code"]) for job in failed] == [("FAILED", 2)]
    assert failed[0]["submission_id"].startswith("glide-ingest-")

    # Token authentication is on: without the token, or with another one, nothing is submitted.
    no_token = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    wrong = world["root"] / "wrong-token"
    wrong.write_text("0" * 64)
    for env, says in ((no_token, "requires Ray's token authentication"),
                      ({**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, "refused the token")):
        proc = subprocess.run([*glide, "list", "--address", cluster.address], capture_output=True, text=True,
                              cwd=REPO, env=env, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]
        assert "RAY_AUTH_MODE=token" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kill_after_shards", [0, 2, 4])
def test_losing_the_worker_node_mid_ingest_loses_and_duplicates_nothing(world, local_result, cluster,
                                                                      kill_after_shards):
    worker = live_worker(cluster)
    out = world["root"] / f"killed-after-{kill_after_shards}"
    started = time.monotonic()
    job = subprocess.Popen(submit_cmd(cluster, *ingest_args(world["urls"], out, world["configs"]["anywhere"])),
                           cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (len(list(out.glob("shards/part-*.arrow"))) >= kill_after_shards
                   and cluster.running_tasks(worker, "run_shard_fn")):
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "no crawl task ran on the worker node"
            time.sleep(0.1)
        killed = cluster.kill(worker)
        killed_at = time.monotonic() - started
        done_then = len(list(out.glob("shards/part-*.arrow")))
        assert not (out / "manifest.json").exists(), "the stage finished before the node was lost"
        stdout, stderr = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert len(killed) >= 3  # `ray start`, the raylet, an agent, the crawl task's worker...
    assert_same_dataset(out, local_result, world["rows"])
    print(f"\nworker node killed {killed_at:.1f} s in, {done_then} shard(s) done; the job finished "
          f"{time.monotonic() - started:.1f} s after its submission")
