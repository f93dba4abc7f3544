"""Glide commands as Ray jobs: submit through the Ray Jobs API, follow the logs, end with the job's status.

    client = connect(address)                  # --address > $RAY_API_SERVER_ADDRESS > $RAY_ADDRESS > local
    env = job_runtime_env(deps=Deps.IMAGE)     # this checkout as working_dir, minus data, checkpoints, .venv
    job_id = submit(client, ["ingest", ...], env, EntrypointResources(num_cpus=1))
    info = follow(client, job_id, sys.stdout)  # streams the driver's output until the job ends
    exit_code(info)                            # 0 succeeded, 2 the command's bad input, 1 anything else

The job runs `python -m pipeline.cli ARGV` in the unpacked working dir, so the code that runs is the
code submitted; inside the job Ray sets RAY_ADDRESS, so the command joins the cluster instead of
starting an embedded Ray. Dependencies: `Deps.IMAGE` (the default) trusts the cluster's image to hold
them (cluster/Dockerfile installs setup.cfg's install_requires); `Deps.PIP` adds them to the runtime
environment, installed on every node (minutes per node with torch) for clusters built from a bare
Ray image.

Token authentication is Ray's own: with RAY_AUTH_MODE=token the client sends the token Ray's loader
finds (RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token); a token is
never sent to an address unless RAY_AUTH_MODE=token says so (as Ray's own CLI).
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO

from shards import UserError

DISTRIBUTION = "glide-pipeline"
PACKAGES = ("shards", "pipeline", "filtering", "training", "evaluation", "cluster")
ENTRYPOINT = "python -m pipeline.cli"
ADDRESS_HINT = "give --address http://HEAD:8265 or set RAY_ADDRESS"
AUTH_HINT = ("set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN or in the file "
             "RAY_AUTH_TOKEN_PATH names (default ~/.ray/auth_token)")


class Deps(str, enum.Enum):
    """Where a job's Python dependencies come from."""

    IMAGE = "image"  # the cluster's image has them (cluster/Dockerfile)
    PIP = "pip"      # the runtime environment installs setup.cfg's install_requires on each node


@dataclass
class EntrypointResources:
    """What the job's driver (the glide command itself) reserves; its Ray tasks ask for their own.

    All empty: Ray runs the driver on the head node."""

    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None
    memory: Optional[int] = None
    resources: dict = field(default_factory=dict)
    label_selector: dict = field(default_factory=dict)

    def submit_kwargs(self) -> dict:
        kwargs = {"entrypoint_num_cpus": self.num_cpus, "entrypoint_num_gpus": self.num_gpus,
                  "entrypoint_memory": self.memory, "entrypoint_resources": self.resources or None,
                  "entrypoint_label_selector": self.label_selector or None}
        return {k: v for k, v in kwargs.items() if v is not None}


# --- parsing flag values -------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30,
          "gib": 2**30, "ti": 2**40, "tib": 2**40}


def parse_memory(text: str, flag: str = "--memory") -> int:
    """'8GiB', '512M', '1.5G' or plain bytes -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise UserError(f"{flag} {text!r}: give bytes or a size such as 512MiB, 8GiB, 16G")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_mapping(text: str, flag: str, number: bool) -> dict:
    """A JSON object or NAME=VALUE[,NAME=VALUE...]; values are numbers when `number`."""
    text = text.strip()
    try:
        if text.startswith("{"):
            mapping = json.loads(text)
            if not isinstance(mapping, dict):
                raise ValueError
        else:
            mapping = dict(part.split("=", 1) for part in text.split(",") if part.strip())
            mapping = {k.strip(): v.strip() for k, v in mapping.items()}
        if number:
            mapping = {k: float(v) for k, v in mapping.items()}
            if any(v <= 0 for v in mapping.values()):
                raise ValueError
        else:
            mapping = {k: str(v) for k, v in mapping.items()}
    except ValueError:
        what = "positive numbers" if number else "values"
        raise UserError(f"{flag} {text!r}: give NAME=VALUE[,NAME=VALUE] or a JSON object, with {what}") from None
    if not mapping or not all(mapping):
        raise UserError(f"{flag} {text!r}: names must not be empty")
    return mapping


# --- the runtime environment ---------------------------------------------------------------------

def project_root() -> Optional[Path]:
    """The checkout this code runs from (setup.cfg beside the packages), or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "setup.cfg").is_file() and (root / "pipeline" / "cli.py").is_file() else None


def default_runtime_env() -> dict:
    """cluster/runtime-env.yaml: excludes, env_vars and setup timeout of every submitted job."""
    import yaml

    return yaml.safe_load(importlib.resources.files("cluster").joinpath("runtime-env.yaml").read_text())


def load_runtime_env_file(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: runtime environment file not found")
    try:
        env = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML/JSON ({getattr(e, 'problem', e)})") from None
    if not isinstance(env, dict):
        raise UserError(f"{path}: a runtime environment must be a mapping (working_dir, env_vars, pip, ...)")
    return env


def merge_runtime_env(base: dict, extra: dict) -> dict:
    """`extra` on top of `base`: env_vars merged, excludes added, anything else replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if key == "env_vars":
            merged[key] = {**base.get(key, {}), **{k: str(v) for k, v in value.items()}}
        elif key == "excludes":
            merged[key] = list(base.get(key, [])) + [x for x in value if x not in base.get(key, [])]
        else:
            merged[key] = value
    return merged


def requirements() -> list[str]:
    """setup.cfg's install_requires (of this checkout, else as installed), without Ray: the cluster's
    own Ray stays the one its image was built with."""
    root = project_root()
    if root is not None:
        import configparser

        setup = configparser.ConfigParser()
        setup.read(root / "setup.cfg")
        lines = setup.get("options", "install_requires", fallback="").splitlines()
        declared = [line.split("#", 1)[0].strip() for line in lines]
    else:
        try:
            declared = [r for r in importlib.metadata.requires(DISTRIBUTION) or [] if "extra ==" not in r]
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"--deps pip: {DISTRIBUTION} is neither a checkout here nor installed, so its "
                            f"dependencies are unknown; use --deps image") from None
    return [r for r in declared if r and re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].strip().lower() != "ray"]


def package_dirs() -> list[str]:
    """Folders of the project's packages as installed here (py_modules when the code is not in working_dir)."""
    dirs = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"package {name!r} not found here; run glide submit from the project checkout")
        dirs.append(str(Path(list(spec.submodule_search_locations)[0])))
    return dirs


def job_runtime_env(*, deps: Deps = Deps.IMAGE, working_dir: Optional[str] = None,
                    extra_file: Optional[str] = None) -> dict:
    """The runtime environment of a submitted glide command.

    working_dir: default this checkout; another folder is shipped as it is, with the project's
    packages beside it as py_modules. A `working_dir` or `py_modules` in `extra_file` wins."""
    env = default_runtime_env()
    if extra_file:
        env = merge_runtime_env(env, load_runtime_env_file(extra_file))
    root = project_root()
    if "working_dir" not in env and "py_modules" not in env:
        chosen = Path(working_dir).resolve() if working_dir else root
        if working_dir and not chosen.is_dir():
            raise UserError(f"--working-dir {working_dir}: not a folder")
        if chosen is not None:
            env["working_dir"] = str(chosen)
        if chosen is None or chosen != root:
            env["py_modules"] = package_dirs()
    if deps == Deps.PIP:
        env["pip"] = {"packages": requirements(), "pip_check": False}
    return env


# --- talking to the cluster ----------------------------------------------------------------------

def given_address(address: Optional[str]) -> Optional[str]:
    """The Jobs API address: the flag, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS (Ray's variables)."""
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def _environment_without(*names: str):
    """Ray's client lets these variables override the address it is given; ours was resolved already."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _headers_from_env() -> Optional[dict]:
    """$RAY_JOB_HEADERS (a JSON object), as Ray's `ray job` CLI reads it."""
    text = os.environ.get("RAY_JOB_HEADERS")
    if not text:
        return None
    try:
        headers = json.loads(text)
        if isinstance(headers, dict):
            return headers
    except ValueError:
        pass
    raise UserError("RAY_JOB_HEADERS: not a JSON object of HTTP headers")


def auth_error(where: str, error: Exception) -> UserError:
    refused = "Authentication failed" in str(error)
    what = "refused the token sent" if refused else "requires Ray's token authentication"
    mode = os.environ.get("RAY_AUTH_MODE", "unset")
    return UserError(f"{where}: the cluster {what} (RAY_AUTH_MODE is {mode}); {AUTH_HINT}")


def quiet_ray_client(debug: bool = False) -> None:
    """Ray's client logs every packaging step at INFO; keep the terminal to the job's own output."""
    import logging

    import ray.job_submission  # noqa: F401  (importing sets Ray's loggers up; adjust them afterwards)

    level = logging.INFO if debug else logging.ERROR
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(level)  # the two SDK modules set INFO on their own loggers


def connect(address: Optional[str] = None):
    """A JobSubmissionClient for the cluster at `address` (see given_address); UserError if unreachable."""
    from ray.dashboard.utils import get_address_for_submission_client
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    given = given_address(address)
    where = given or "the local Ray cluster"
    headers = _headers_from_env()
    with _environment_without("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        try:
            url = given if given and given.startswith(("http://", "https://")) \
                else get_address_for_submission_client(given)
            where = url
            return JobSubmissionClient(url, headers=headers)
        except AuthenticationError as e:
            raise auth_error(where, e) from None
        except (OSError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{where}: cannot reach the Ray Jobs API ({first}); {ADDRESS_HINT}") from None


def entrypoint(argv: list[str]) -> str:
    return f"{ENTRYPOINT} {shlex.join(argv)}"


def submit(client, argv: list[str], runtime_env: dict, resources: EntrypointResources,
           submission_id: Optional[str] = None) -> str:
    """Submit `glide ARGV` as a job; returns its submission id."""
    from ray.exceptions import AuthenticationError

    if not argv:
        raise UserError("glide submit: give the glide command to run after --, e.g. glide submit -- ingest ...")
    submission_id = submission_id or f"glide-{argv[0]}-{os.urandom(4).hex()}"
    try:
        return client.submit_job(entrypoint=entrypoint(argv), runtime_env=runtime_env,
                                 submission_id=submission_id, metadata={"glide_command": shlex.join(argv)[:500]},
                                 **resources.submit_kwargs())
    except AuthenticationError as e:
        raise auth_error(client.get_address(), e) from None
    except RuntimeError as e:  # the Jobs API refused the request: a duplicate id, a bad runtime env, ...
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        if any("already exists" in line for line in lines):
            raise UserError(f"--submission-id {submission_id}: the cluster has a job with this id already") \
                from None
        if lines and re.search(r"status code 4\d\d", lines[0]):
            raise UserError(f"{client.get_address()}: job refused: {lines[-1][:500]}") from None
        raise RuntimeError(f"{client.get_address()}: job not submitted: {lines[-1][:500] if lines else e}") from None


def job_info(client, job_id: str):
    """The job's JobDetails; UserError naming it if the cluster does not know it."""
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise UserError(f"{job_id}: no such job on {client.get_address()}") from None
        raise


def wait(client, job_id: str, poll_s: float = 0.5):
    """Poll until the job is in a terminal state; returns its JobDetails."""
    while True:
        info = job_info(client, job_id)
        if info.status.is_terminal():
            return info
        time.sleep(poll_s)


def follow(client, job_id: str, out: TextIO):
    """Write the job's logs to `out` as they come, until it ends; returns its final JobDetails."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as e:  # the stream broke (a head restart, a proxy): the status still tells the end
        out.write(f"[glide: the log stream of {job_id} broke ({e}); waiting for the job to end]\n")
        out.flush()
    return wait(client, job_id)


def exit_code(info) -> int:
    """0 if the job succeeded, 2 if the glide command itself exited 2 (bad input), else 1."""
    from ray.job_submission import JobStatus

    if info.status == JobStatus.SUCCEEDED:
        return 0
    if info.status == JobStatus.FAILED and getattr(info, "driver_exit_code", None) == 2:
        return 2
    return 1


def describe(info) -> str:
    """One line: id, status, run time and, for a failure, Ray's reason (first line)."""
    seconds = ""
    if info.start_time and info.end_time:
        seconds = f" after {(info.end_time - info.start_time) / 1000:.1f} s"
    reason = ""
    if str(info.status) in ("FAILED", "STOPPED") and info.message:  # Ray appends the log's tail: streamed already
        reason = ": " + info.message.strip().splitlines()[0].split(", last available logs")[0][:300]
    code = getattr(info, "driver_exit_code", None)
    exit_text = f" (exit code {code})" if code not in (None, 0) else ""
    return f"job {info.submission_id} {info.status}{seconds}{exit_text}{reason}"
