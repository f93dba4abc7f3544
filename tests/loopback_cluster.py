"""A real multi-node Ray cluster on this machine, for the cluster tests.

    with LoopbackCluster(auth=True) as cluster:
        cluster.start_head(num_cpus=1, resources={"head_node": 1})
        worker = cluster.add_worker(num_cpus=2, resources={"worker_node": 2})
        cluster.env           # what a client needs: RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH, PATH with this venv
        cluster.address       # the Jobs API, http://127.0.0.1:PORT
        cluster.kill(worker)  # SIGKILL the node: its `ray start`, raylet, agents and workers

Every node is `ray start --block` in its own session, with its own temp dir and its own ports. The
teardown never runs `ray stop` (it would stop every Ray on the machine, other people's too): it
sends SIGTERM to the sessions of the nodes started here, then SIGKILLs what is left of them (their
processes, and any process whose command line names one of this cluster's temp dirs).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path

    @property
    def session(self) -> int:
        return self.process.pid  # start_new_session: the `ray start` process leads the node's session


class LoopbackCluster:
    def __init__(self, auth: bool = True, health_check_ms: int = 500):
        # Short paths: Ray's unix sockets live under the temp dirs.
        self.root = Path(tempfile.mkdtemp(prefix="glide-ray-", dir="/tmp"))
        self.auth = auth
        self.health_check_ms = health_check_ms
        self.nodes: list[Node] = []
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in a job is this venv's
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"})
        if auth:
            self.token_path = self.root / "auth_token"
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)
            env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)})
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        self.env = env

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"  # Ray itself swaps loopback for the host's address

    def _node_ports(self) -> list[str]:
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]

    def _start(self, name: str, args: list[str], num_cpus: int, resources: dict, labels: dict) -> Node:
        temp_dir = self.root / name
        log = self.root / f"{name}.log"
        cmd = [str(BIN / "ray"), "start", "--block", *args, *self._node_ports(), f"--num-cpus={num_cpus}",
               f"--resources={json.dumps(resources)}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               "--object-store-memory=80000000", "--include-log-monitor=false"]
        if labels:
            cmd.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
        with open(log, "w") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env=self.env)
        node = Node(name, process, temp_dir, log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 1, resources: dict | None = None, labels: dict | None = None,
                   timeout: float = 180) -> Node:
        # Fast node-death detection: a killed worker node is declared dead in ~3 health checks.
        system_config = {"health_check_period_ms": self.health_check_ms, "health_check_timeout_ms": 1000,
                         "health_check_failure_threshold": 3}
        node = self._start("head", ["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                                    "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                                    f"--ray-client-server-port={free_port()}",
                                    f"--system-config={json.dumps(system_config)}"],
                           num_cpus, resources or {}, labels or {})
        self._wait(lambda: self._healthz(), node, timeout, "the head's Jobs API")
        return node

    def add_worker(self, num_cpus: int = 1, resources: dict | None = None, labels: dict | None = None,
                   timeout: float = 180) -> Node:
        name = f"worker{sum(n.name.startswith('worker') for n in self.nodes) + 1}"
        node = self._start(name, [f"--address={self.gcs_address}", f"--node-name={name}"], num_cpus,
                           resources or {}, labels or {})
        self._wait(lambda: self.node_states().get(name) == "ALIVE", node, timeout, f"{name} to join")
        return node

    def _healthz(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/api/gcs_healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def node_states(self) -> dict:
        """{node name: ALIVE or DEAD} from Ray's state API (which wants the token under auth)."""
        request = urllib.request.Request(f"{self.address}/api/v0/nodes?limit=1000&detail=1")
        if self.auth:
            request.add_header("Authorization", f"Bearer {self.token_path.read_text().strip()}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                result = json.loads(r.read())["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return {}
        states = {}
        for n in result:  # a name's latest state wins: a live node over a dead one of the same name
            if states.get(n["node_name"]) != "ALIVE":
                states[n["node_name"]] = n["state"]
        return states

    def _wait(self, ready, node: Node, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited ({node.process.returncode}):\n{node.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}:\n{node.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def processes(self, node: Node) -> list[int]:
        """Every process of `node`: its session, and anything naming its temp dir."""
        import psutil

        found = set()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(proc.pid) == node.session or str(node.temp_dir) in " ".join(proc.info["cmdline"] or []):
                    found.add(proc.pid)
            except (OSError, psutil.Error):
                continue
        return sorted(found)

    def running_tasks(self, node: Node, name: str) -> int:
        """How many of `node`'s worker processes are executing a task named `name` (their process title)."""
        import psutil

        count = 0
        for pid in self.processes(node):
            try:
                if psutil.Process(pid).cmdline()[:1] == [f"ray::{name}"]:
                    count += 1
            except psutil.Error:
                continue
        return count

    def kill(self, node: Node) -> list[int]:
        """SIGKILL every process of `node` at once, as a machine that vanishes."""
        pids = self.processes(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(timeout=30)
        return pids

    def stop(self) -> None:
        """Stop every node started here (SIGTERM to their sessions, then SIGKILL), and remove the temp dirs."""
        for node in reversed(self.nodes):
            try:
                os.killpg(node.session, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5  # nothing here is kept: a short grace, then SIGKILL
        for node in self.nodes:
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            for pid in self.processes(node):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if node.process.poll() is None:
                node.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LoopbackCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
