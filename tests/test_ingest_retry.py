"""Transient failures are not final: retried with backoff during the crawl, and re-crawled later
with `glide ingest --retry-transient`, with input = kept + rejected throughout."""
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards as sh
from pipeline.ingest.fetch import Reason, backoff_seconds, classify_download_error
from conftest import run_glide

N_GOOD = 24


def png(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (i * 9 % 256, 80, 160)).save(buf, format="PNG")
    return buf.getvalue()


class FlakyServer:
    """127.0.0.1 image server whose paths fail on purpose: `plan[path]` is a list of what the next
    requests get ("503", "429", "reset", "slow", then the image); "/missing.png" is always a 404."""

    def __init__(self):
        self.plan: dict[str, list[str]] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                    todo = server.plan.get(self.path, [])
                    step = todo.pop(0) if todo else "ok"
                if self.path == "/missing.png":
                    self.send_error(404)
                    return
                if step in ("503", "429"):
                    self.send_error(int(step))
                    return
                if step == "reset":
                    self.connection.close()  # no response at all: "Remote end closed connection"
                    return
                if step == "slow":
                    threading.Event().wait(3.0)
                body = png(int(self.path.strip("/").split(".")[0]))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def url_list(path, base):
    rows = [{"url": f"{base}/{i}.png", "caption": f"picture {i}"} for i in range(N_GOOD)]
    rows.append({"url": f"{base}/missing.png", "caption": "gone"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_config(path, retries, timeout=1.5):
    path.write_text("ray:\n  num_cpus: 2\ningest:\n  allow_private_networks: true\n  image_size: 32\n"
                    f"  shard_size: 10\n  threads: 8\n  timeout: {timeout}\n  retries: {retries}\n"
                    "  retry_backoff: 0.05\n")
    return path


def uids(dataset, kind):
    return [u for b in sh.iter_record_batches(str(dataset), ["uid"], kind=kind) for u in b.column(0).to_pylist()]


def reasons(dataset):
    return {r["url"].rsplit("/", 1)[-1]: r["reason"]
            for b in sh.iter_record_batches(str(dataset), ["url", "reason"], kind="rejects") for r in b.to_pylist()}


def test_transient_reasons_and_backoff():
    assert classify_download_error("HTTP Error 503: Service Unavailable", None) == Reason.http_5xx
    assert classify_download_error("HTTP Error 429: Too Many Requests", None) == Reason.http_429
    assert classify_download_error("Remote end closed connection without response", None) == Reason.connection_error
    waits = [backoff_seconds(a, 1.0) for a in range(8)]
    assert 0.5 <= waits[0] < 1.5 and 4 <= waits[3] < 12 and max(waits) <= 45  # doubles, jittered, capped


@pytest.mark.slow
@pytest.mark.integration
def test_the_crawl_retries_transient_failures_with_backoff_by_default(tmp_path):
    with FlakyServer() as server:
        server.plan = {"/1.png": ["503", "503"], "/2.png": ["reset"], "/3.png": ["429"], "/4.png": ["slow"]}
        urls = url_list(tmp_path / "urls.parquet", server.base)
        config = tmp_path / "glide.yaml"
        config.write_text("ray:\n  num_cpus: 2\ningest:\n  allow_private_networks: true\n  image_size: 32\n"
                          "  timeout: 1.5\n  retry_backoff: 0.05\n")  # retries: the default
        proc = run_glide("ingest", urls, "-o", tmp_path / "ds", "-c", config, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert server.hits["/1.png"] == 3 and server.hits["/4.png"] == 2 and server.hits["/missing.png"] == 1
    counts = sh.read_manifest(str(tmp_path / "ds"))["counts"]
    assert counts == {"input": N_GOOD + 1, "kept": N_GOOD, "rejected": {"http_404": 1}}


@pytest.mark.slow
@pytest.mark.integration
def test_retry_transient_moves_recovered_rejects_into_new_shards(tmp_path):
    ds = tmp_path / "ds"
    with FlakyServer() as server:
        server.plan = {f"/{i}.png": ["503"] for i in range(5)}
        server.plan.update({"/5.png": ["reset"], "/6.png": ["429"], "/7.png": ["slow"]})
        urls = url_list(tmp_path / "urls.parquet", server.base)
        no_retries = write_config(tmp_path / "glide.yaml", retries=0)
        first = run_glide("ingest", urls, "-o", ds, "-c", no_retries, timeout=300)
        assert first.returncode == 0, first.stderr
        before = sh.read_manifest(str(ds))
        assert before["counts"] == {"input": 25, "kept": 16, "rejected": {
            "connection_error": 1, "http_404": 1, "http_429": 1, "http_5xx": 5, "timeout": 1}}
        assert len(before["shards"]) == 3

        # The server is healthy again: the same command plus --retry-transient re-crawls the 8.
        hits = dict(server.hits)
        retry = run_glide("ingest", urls, "-o", ds, "-c", no_retries, "--retry-transient", timeout=300)
        assert retry.returncode == 0, retry.stderr
        assert "8 of 8 now kept" in retry.stderr
        recrawled = {p for p in server.hits if server.hits[p] > hits.get(p, 0)}
        assert recrawled == {f"/{i}.png" for i in range(8)}  # never the 404, never a kept image

        after = sh.read_manifest(str(ds))
        assert after["counts"] == {"input": 25, "kept": 24, "rejected": {"http_404": 1}}
        assert [s["name"] for s in after["shards"]] == [sh.shard_name(i) for i in range(4)]
        assert after["retry_transient"][0]["recovered"] == 8 and after["config"] == before["config"]
        for kind in ("shards", "rejects"):
            assert all(sh.verify_shard(str(ds / kind / e["name"]), e) for e in after[kind])
        kept = uids(ds, "shards")
        assert len(kept) == len(set(kept)) == 24
        assert reasons(ds) == {"missing.png": "http_404"}
        moved = [r for b in sh.iter_shard_batches(str(ds / "shards" / sh.shard_name(3))) for r in b.to_pylist()]
        assert sorted(r["source"] for r in moved) == sorted(f"{urls}:{i}" for i in range(8))

        # Nothing transient left; rerunning the first command keeps the retried dataset as it is.
        again = run_glide("ingest", "-o", ds, "-c", no_retries, "--retry-transient", timeout=300)
        assert again.returncode == 0 and "nothing to retry" in again.stderr
        rerun = run_glide("ingest", urls, "-o", ds, "-c", no_retries, timeout=300)
        assert rerun.returncode == 0 and "nothing to do" in rerun.stderr, rerun.stderr
        assert sh.read_manifest(str(ds))["counts"] == after["counts"]


def test_retry_transient_needs_a_finished_ingest(tmp_path, glide_cli, capsys):
    # in-process (refused before Ray starts); a bad ingest's exit code in a real process: test_ingest_stage.py
    assert glide_cli("ingest", "-o", tmp_path / "nothing", "--retry-transient") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no manifest.json: the ingest has not finished" in err
    assert glide_cli("ingest", "-o", tmp_path / "nothing") == 2
    assert "give one or more URL lists" in capsys.readouterr().err
