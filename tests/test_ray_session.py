"""Embedded Ray by default; an existing cluster when an address is given (flag, config or $RAY_ADDRESS)."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = """
import json, sys
from pipeline.config import RayConfig
from pipeline.ray_session import ray_session
import ray
address = sys.argv[1] if len(sys.argv) > 1 else None
with ray_session(RayConfig(address=address, num_cpus=1)):
    ctx = ray.get_runtime_context()
    print(json.dumps({"gcs": ctx.gcs_address, "cpus": ray.cluster_resources().get("CPU")}))
"""


# The test head lives on this machine only; Ray's token authentication is turned off for it (a real
# cluster keeps it on, and its users pass the token through Ray's own RAY_AUTH_TOKEN settings).
LOOPBACK_CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_probe(*args, env=None) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-c", PROBE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full)


def finish_probe(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def probe(*args, env=None):
    return finish_probe(start_probe(*args, env=env))


@pytest.mark.slow
def test_embedded_ray_is_quiet_and_has_no_public_dashboard():
    result = probe()
    import json

    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["cpus"] == 1.0
    # Ray's own start-up lines ("Started a local Ray instance", dashboard URL) stay out of the terminal.
    assert "Started a local Ray instance" not in result.stderr
    assert "View the dashboard" not in result.stderr


@pytest.mark.slow
def test_joins_an_existing_cluster_by_address_or_environment():
    port = free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **LOOPBACK_CLUSTER_ENV},
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        import json

        # The two ways of joining are independent clients of the one head: start both, then read both
        # (each spends most of its time importing Ray; one after the other doubled the test's time).
        probes = [start_probe(address, env=LOOPBACK_CLUSTER_ENV),
                  start_probe(env={"RAY_ADDRESS": address, **LOOPBACK_CLUSTER_ENV})]
        try:
            by_flag, by_env = (json.loads(finish_probe(p).stdout.strip().splitlines()[-1]) for p in probes)
        finally:
            for p in probes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        # Joined the head started above (2 CPUs), not a fresh embedded Ray (which would have 1).
        assert by_flag["gcs"].endswith(f":{port}") and by_flag["cpus"] == 2.0
        assert by_env["gcs"].endswith(f":{port}") and by_env["cpus"] == 2.0
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        # `ray start` records its address for later bare ray.init() calls; leave no stale pointer.
        from ray._common.utils import reset_ray_address

        reset_ray_address()
