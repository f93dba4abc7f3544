"""The labelling page under load: 50 raters at once over loopback, each answer's round trip measured.

    python -m benchmarks.label_load [--raters 50] [--labels 40] [--think-s 1.0] [--reps 2]

`glide serve` runs as its own process (uvicorn, one worker) on a fresh SQLite labels database with one
queue of pairs that want 2 raters each. Each rater is an HTTP client (httpx, all in one asyncio loop
in this process) that signs in with its link's token and then, --labels times, posts its answer to
the pair it was given (POST /api/labels with a fresh client id: the page's submission, whose reply
names the next pair) and waits a think time before the next one. Every 10th answer is sent twice
(a retry), which must store nothing the second time.

Two workloads, alternating, --reps each:
  paced     before each answer (the first too) a think time uniform in [0.5, 1.5] x --think-s: people
            labelling at once (a fast person needs about a second per binary label)
  flat-out  no think time at all: every rater posts again as soon as the reply arrives, so 50
            requests always wait in line; this measures throughput, and its latency is mostly queueing
and, as the floor to compare with, GET /healthz paced like the answers (the framework and loopback
with no database work). Latency = from sending a request to its reply, per request; p50/p99 over all
reps. Every run checks what the load test checks: all raters x labels answers stored exactly once,
no pair given to more than its 2 raters, no "database is locked" anywhere, every reply a 200.
ratio = 100 ms / p99 of the paced answers: the goal (p99 under 100 ms) holds when ratio >= 1.
Ends with one JSON line {"benchmark": "label_load", "ratio": R, ...}.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GOAL_MS = 100.0
REPO = Path(__file__).resolve().parent.parent
FILTER = "people"


class Server:
    """`glide serve` as a subprocess: start, kill (as a crash would) and start again on the same port."""

    def __init__(self, db, *args, port: int = 0):
        self.db, self.args, self.port, self.proc = str(db), [str(a) for a in args], port, None
        self.output = ""

    def start(self) -> "Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--db", self.db,
                                      "--port", str(self.port), *self.args], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"glide serve exited {self.proc.returncode}: {self.output}")
            self.output += line
            found = re.search(r"serving on (http://127\.0\.0\.1:(\d+))", line)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                admin = re.search(r"admin: (\S+)", self.output)
                self.admin_link = admin.group(1) if admin else None
                return self
        raise RuntimeError(f"glide serve did not start: {self.output}")

    def kill(self) -> str:
        """SIGKILL (no clean shutdown); returns everything it printed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.proc is not None:
            self.output += self.proc.stdout.read()
            self.proc.stdout.close()
        self.proc = None
        return self.output

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server process has used so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.kill()


def make_world(folder, *, items: int, raters: int, labels_per_item: int = 2) -> tuple[str, str, dict[str, str]]:
    """A dataset of `items` tiny pictures, a labels database with one queue of them (k raters each) and
    `raters` raters; returns (db, dataset, {rater: token})."""
    import pyarrow as pa
    from PIL import Image

    import shards as sh
    from filtering.labels import LabelStore
    from filtering.labels.queues import QueueItem

    folder = Path(folder)
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 40)).save(png, format="PNG")
    urls = [f"http://127.0.0.1/load/{i}.png" for i in range(items)]
    captions = [f"load picture {i}" for i in range(items)]
    uids = [sh.compute_uid(u, c) for u, c in zip(urls, captions)]
    columns = {"uid": uids, "url": urls, "caption": captions, "image": pa.array([png.getvalue()] * items, pa.binary()),
               "image_format": ["png"] * items}
    for name in ("width", "height", "original_width", "original_height"):
        columns[name] = pa.array([32] * items, pa.int32())
    columns.update({"sha256": [""] * items, "source": [f"load:{i}" for i in range(items)]})
    dataset = str(folder / "dataset")
    name = sh.shard_name(0)
    info = sh.write_table(sh.join(dataset, sh.SHARDS_DIR, name), pa.table(columns, schema=sh.PAIRS_SCHEMA))
    rejects = sh.write_table(sh.join(dataset, sh.REJECTS_DIR, name), sh.REJECTS_SCHEMA.empty_table())
    sh.write_manifest(dataset, stage="ingest", config={}, counts={"input": items, "kept": items, "rejected": {}},
                      shards=[{"name": name, **info}], rejects=[{"name": name, **rejects}])
    db = str(folder / "labels.db")
    with LabelStore(db) as store:
        store.create_queue(filter_name=FILTER, kind="random", items=[QueueItem(u) for u in uids], dataset=dataset,
                           labels_per_item=labels_per_item)
        tokens = {f"rater{r:02d}": store.add_rater(f"rater{r:02d}") for r in range(raters)}
    return db, dataset, tokens


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)      # seconds per answer (first sends)
    floor: list[float] = field(default_factory=list)          # seconds per GET /healthz
    errors: list[str] = field(default_factory=list)
    answers: int = 0
    resends: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0                                  # the server process's CPU during the run


async def _signed_in(client, token: str) -> None:
    await client.get("/signin")
    reply = await client.post("/api/signin", json={"token": token},
                              headers={"X-CSRF-Token": client.cookies["glide_signin"]})
    reply.raise_for_status()
    client.headers["X-CSRF-Token"] = (await client.get("/api/me")).json()["csrf"]


async def _rater(url, name, token, labels, think, resend_every, floor, result: LoadResult, rng):
    import httpx

    # TCP_NODELAY as browsers set it: else the client's Nagle holds a POST's body back for the server's ACK
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(base_url=url, timeout=120, transport=transport) as client:
        await _signed_in(client, token)
        item = (await client.get("/api/next")).json()["next"]
        for i in range(labels):
            if item is None:
                result.errors.append(f"{name}: no pair left after {i} answers")
                return
            if think:  # the rater looks at the pair before answering (the first one too)
                await asyncio.sleep(think * rng.uniform(0.5, 1.5))
                if floor:
                    start = time.perf_counter()
                    ok = (await client.get("/healthz")).status_code == 200
                    result.floor.append(time.perf_counter() - start)
                    if not ok:
                        result.errors.append(f"{name}: /healthz failed")
            body = {"client_id": f"{name}-{i:04d}-{rng.getrandbits(64):016x}", "uid": item["uid"],
                    "filter": item["filter"], "queue_id": item["queue_id"], "answer": rng.choice(("yes", "no"))}
            start = time.perf_counter()
            reply = await client.post("/api/labels", json=body)
            result.latencies.append(time.perf_counter() - start)
            if reply.status_code != 200 or reply.json()["stored"] is not True:
                result.errors.append(f"{name}: answer {i}: {reply.status_code} {reply.text[:200]}")
                return
            result.answers += 1
            if resend_every and i % resend_every == resend_every - 1:  # a retry of a reply that got lost
                again = await client.post("/api/labels", json=body)
                result.resends += 1
                if again.status_code != 200 or again.json()["stored"] is not False:
                    result.errors.append(f"{name}: resent answer {i}: {again.status_code} {again.text[:200]}")
            item = reply.json()["next"]


def run_raters(url: str, tokens: dict[str, str], labels: int, *, think_s: float = 0.0, resend_every: int = 10,
               floor: bool = False, seed: int = 0) -> LoadResult:
    """Every rater in `tokens` answers `labels` pairs at once (see the module doc)."""
    result = LoadResult()

    async def main():
        await asyncio.gather(*(_rater(url, name, token, labels, think_s, resend_every, floor, result,
                                      random.Random(f"{seed}:{name}"))
                               for name, token in tokens.items()))

    start = time.perf_counter()
    asyncio.run(main())
    result.seconds = time.perf_counter() - start
    return result


def check_stored(db: str, expected: int, labels_per_item: int = 2) -> list[str]:
    """What must hold after a load: `expected` labels, each client id once, no pair over its raters,
    no rater twice on a pair. Returns the problems found."""
    with sqlite3.connect(db) as raw:
        rows, ids = raw.execute("SELECT count(*), count(DISTINCT client_id) FROM labels").fetchone()
        most = raw.execute("SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM labels GROUP BY uid)").fetchone()[0]
        twice = raw.execute("SELECT count(*) FROM (SELECT 1 FROM labels GROUP BY uid, rater_id HAVING count(*) > 1)"
                            ).fetchone()[0]
    problems = []
    if (rows, ids) != (expected, expected):
        problems.append(f"{rows} labels with {ids} client ids stored, {expected} expected")
    if most > labels_per_item:
        problems.append(f"a pair has {most} labels, over its {labels_per_item} raters")
    if twice:
        problems.append(f"{twice} pairs labelled twice by one rater")
    return problems


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def one_run(raters: int, labels: int, think_s: float, floor: bool) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        items = raters * labels // 2 + raters * 2  # room for everyone: nobody runs out of pairs new to them
        db, dataset, tokens = make_world(tmp, items=items, raters=raters)
        with Server(db, "--dataset", dataset, "--gold-every", 0) as server:
            cpu = server.cpu_seconds()
            result = run_raters(server.url, tokens, labels, think_s=think_s, floor=floor)
            if cpu is not None:
                result.server_cpu_s = server.cpu_seconds() - cpu
            output = server.kill()
        result.errors += check_stored(db, raters * labels)
        if "locked" in output.lower() or "Traceback" in output:
            result.errors.append(f"server output: {output[-2000:]}")
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--labels", type=int, default=40)
    parser.add_argument("--think-s", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    paced, flat = LoadResult(), LoadResult()
    for rep in range(args.reps):
        for name, run in (("paced", lambda: one_run(args.raters, args.labels, args.think_s, True)),
                          ("flat-out", lambda: one_run(args.raters, args.labels, 0.0, False)))[::1 if rep % 2 == 0 else -1]:
            result = run()
            total = paced if name == "paced" else flat
            total.latencies += result.latencies
            total.floor += result.floor
            total.errors += result.errors
            total.answers += result.answers
            total.resends += result.resends
            total.seconds += result.seconds
            total.server_cpu_s += result.server_cpu_s
            print(f"rep {rep + 1} {name:<8} {result.answers} answers in {result.seconds:.1f} s, "
                  f"p50 {statistics.median(result.latencies) * 1000:.1f} ms, "
                  f"p99 {percentile(result.latencies, 99) * 1000:.1f} ms, server CPU "
                  f"{result.server_cpu_s / max(result.answers, 1) * 1000:.1f} ms per answer, "
                  f"errors {len(result.errors)}", flush=True)
    ms = lambda values, q: percentile(values, q) * 1000  # noqa: E731
    print(f"\n{'workload':<28}{'answers':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'answers/s':>11}")
    print(f"{'paced (think ~' + str(args.think_s) + ' s)':<28}{paced.answers:>9}{ms(paced.latencies, 50):>9.1f}"
          f"{ms(paced.latencies, 99):>9.1f}{max(paced.latencies) * 1000:>9.1f}{paced.answers / paced.seconds:>11.1f}")
    print(f"{'  floor: GET /healthz':<28}{len(paced.floor):>9}{ms(paced.floor, 50):>9.1f}{ms(paced.floor, 99):>9.1f}"
          f"{max(paced.floor) * 1000:>9.1f}{'':>11}")
    print(f"{'flat-out (no think time)':<28}{flat.answers:>9}{ms(flat.latencies, 50):>9.1f}"
          f"{ms(flat.latencies, 99):>9.1f}{max(flat.latencies) * 1000:>9.1f}{flat.answers / flat.seconds:>11.1f}")
    errors = paced.errors + flat.errors
    print(f"\n{args.raters} raters x {args.labels} answers per run, {args.reps} runs each; {paced.resends + flat.resends} "
          f"resends stored nothing; problems: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    p99 = ms(paced.latencies, 99)
    cpu_ms = flat.server_cpu_s / max(flat.answers, 1) * 1000
    print(f"server CPU per answer (flat-out, every request included): {cpu_ms:.1f} ms; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps({"benchmark": "label_load", "ratio": round(GOAL_MS / p99, 3), "goal_ms": GOAL_MS,
                      "raters": args.raters, "labels_each": args.labels, "think_s": args.think_s, "reps": args.reps,
                      "paced_p50_ms": round(ms(paced.latencies, 50), 1), "paced_p99_ms": round(p99, 1),
                      "floor_p99_ms": round(ms(paced.floor, 99), 1),
                      "flat_out_p50_ms": round(ms(flat.latencies, 50), 1),
                      "flat_out_p99_ms": round(ms(flat.latencies, 99), 1),
                      "flat_out_answers_per_s": round(flat.answers / flat.seconds, 1),
                      "server_cpu_ms_per_answer": round(cpu_ms, 2), "cores": os.cpu_count(),
                      "load_average": round(os.getloadavg()[0], 1), "problems": len(errors)}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
