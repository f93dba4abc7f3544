"""`glide ingest` end to end: the sample world crawled over loopback HTTP by real img2dataset
pieces in real Ray tasks; every row accounted for; resumable after SIGKILL; failures named."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import shards as sh
from pipeline.config import IngestConfig, SampleWorldConfig
from pipeline.ingest import url_lists
from conftest import REPO, run_glide

CONFIG = """\
ray:
  num_cpus: 2
ingest:
  image_size: 32
  allow_private_networks: true
  timeout: 2.5
  threads: 8
  shard_retries: 1
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A served sample world (with its bad rows) and a config for crawling it."""
    from pipeline.sample_server import SampleWorldServer
    from pipeline.sample_world import generate_world, write_url_list

    root = tmp_path_factory.mktemp("ingest")
    generate_world(SampleWorldConfig(count=60, seed=5, image_size=48), root / "world")
    with SampleWorldServer(root / "world", slow_seconds=6) as server:
        urls = write_url_list(root / "world", server.base_url, path=root / "urls.parquet")
        (root / "glide.yaml").write_text(CONFIG)
        yield {"root": root, "urls": urls, "config": root / "glide.yaml", "base_url": server.base_url}


def ingest_args(world, out):
    return ["ingest", world["urls"], "-o", out, "-c", world["config"], "--shard-size", "8"]


def uids(dataset, kind):
    return [u for b in sh.iter_record_batches(str(dataset), columns=["uid"], kind=kind)
            for u in b.column("uid").to_pylist()]


def expected_reasons(base_url):
    from pipeline.sample_world import BAD_ROW_KINDS

    return {base_url + kind.path: kind.reason for kind in BAD_ROW_KINDS}


@pytest.fixture(scope="module")
def clean_run(world):
    out = world["root"] / "clean"
    proc = run_glide(*ingest_args(world, out), timeout=300)
    return out, proc


def test_shard_worker_accounts_for_every_row_with_the_right_reason(world, tmp_path):
    from pipeline.ingest.shard_worker import ingest_shard
    from pipeline.stages import ShardJob

    def job(name):
        return ShardJob(name=name, args=(sh.join(ds, "_inputs", "part-00000.arrow"),),
                        pairs_path=sh.join(ds, "shards", name), rejects_path=sh.join(ds, "rejects", name))

    ds = str(tmp_path / "ds")
    record = url_lists.shard_url_lists([str(world["urls"])], ds, url_col="url", caption_col="caption",
                                       shard_size=1000)
    cfg = IngestConfig(allow_private_networks=True, timeout=2.5, threads=8, image_size=32).model_dump(mode="json")
    result = ingest_shard(job("p.arrow"), cfg)
    assert result.input == record["rows"] == 67
    assert result.input == result.kept + sum(result.rejected.values())
    rejects = sh.read_table(sh.join(ds, "rejects", "p.arrow")).to_pylist()
    assert {r["url"]: r["reason"] for r in rejects} == expected_reasons(world["base_url"])

    # Safe by default: the same list without allowing private networks fetches nothing.
    cfg["allow_private_networks"] = False
    result = ingest_shard(job("q.arrow"), cfg)
    assert result.kept == 0 and result.rejected == {"blocked_host": 67}


@pytest.mark.slow
@pytest.mark.integration
def test_glide_ingest_writes_the_shard_contract_and_accounts_for_every_row(world, clean_run):
    out, proc = clean_run
    assert proc.returncode == 0, proc.stderr
    manifest = sh.read_manifest(str(out))
    counts = manifest["counts"]
    assert counts["input"] == 67 and counts["input"] == counts["kept"] + sum(counts["rejected"].values())
    assert counts["kept"] == 60 and manifest["stage"] == "ingest" and len(manifest["shards"]) == 9
    assert manifest["config"]["image_size"] == 32 and manifest["config"]["shard_size"] == 8
    for entry in manifest["shards"] + manifest["rejects"]:
        kind = "shards" if entry in manifest["shards"] else "rejects"
        assert sh.verify_shard(str(out / kind / entry["name"]), entry)

    pairs = [r for b in sh.iter_record_batches(str(out)) for r in b.to_pylist()]
    assert len(pairs) == 60 and len({p["uid"] for p in pairs}) == 60
    for p in pairs[:10]:
        assert p["uid"] == sh.compute_uid(p["url"], p["caption"])
        assert min(p["width"], p["height"]) == 32 and p["original_width"] == 48
        assert p["image_format"] == "jpeg" and p["image"][:2] == b"\xff\xd8"
        assert p["source"].startswith(str(world["urls"]) + ":")
    rejects = [r for b in sh.iter_record_batches(str(out), kind="rejects") for r in b.to_pylist()]
    assert {r["url"]: r["reason"] for r in rejects} == expected_reasons(world["base_url"])
    assert all(r["stage"] == "ingest" and r["detail"] for r in rejects)

    # What the user sees: a summary with rates and reasons on stdout, progress on stderr, no Ray noise.
    assert "kept" in proc.stdout and "timeout" in proc.stdout and "rows/s" in proc.stdout
    assert str(out) in proc.stdout
    assert "rows/s" in proc.stderr
    noise = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("ingest:")]
    assert noise == [], noise


@pytest.mark.slow
@pytest.mark.integration
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(world, clean_run, tmp_path):
    clean, proc = clean_run
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "resumed"
    args = [sys.executable, "-m", "pipeline.cli", *map(str, ingest_args(world, out))]
    victim = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "shards").glob("part-*.arrow")):
            assert time.monotonic() < deadline and victim.poll() is None, "no output shard appeared"
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the CLI and the Ray processes it started
        victim.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    done_before = len(list((out / "shards").glob("part-*.arrow")))
    assert done_before < 9

    rerun = run_glide(*ingest_args(world, out), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for kind in ("shards", "rejects"):
        resumed, reference = uids(out, kind), uids(clean, kind)
        assert len(resumed) == len(set(resumed)), f"duplicate uids in {kind}"
        assert set(resumed) == set(reference)
    counts = sh.read_manifest(str(out))["counts"]
    assert counts == sh.read_manifest(str(clean))["counts"]
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"


@pytest.mark.slow
@pytest.mark.integration
def test_a_shard_that_keeps_failing_is_retried_then_named_and_the_exit_is_nonzero(world, tmp_path):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "rejects").write_text("a file where the rejects folder should be")
    proc = run_glide(*ingest_args(world, out), timeout=300)
    assert proc.returncode == 1
    assert "glide: failed: ingest: 9 shard(s) failed after 2 attempts" in proc.stderr
    assert "part-00000.arrow" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "manifest.json").exists()
    errors = json.loads((out / "_progress" / "failures.json").read_text())
    assert len(errors) == 9 and all(len(attempts) == 2 for attempts in errors.values())
    assert "rejects" in errors["part-00000.arrow"][0]
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_bad_url_lists_exit_2_naming_file_and_column(tmp_path):
    bad = tmp_path / "urls.csv"
    bad.write_text("link,caption\nhttp://x/1.jpg,one\n")
    from pipeline.cli import main

    assert main(["ingest", str(bad), "-o", str(tmp_path / "ds")]) == 2
    proc = run_glide("ingest", bad, "-o", tmp_path / "ds", timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"glide: error: {bad}: no column 'url' (columns: link, caption); " \
                                  "set --url-col/--caption-col"
    assert main(["ingest", str(bad), "-o", str(tmp_path / "ds2"), "--url-col", "link", "--shard-size", "0"]) == 2
