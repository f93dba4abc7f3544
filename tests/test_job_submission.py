"""What `glide submit` sends and how it reads the answer, without a cluster (tests/test_cluster_submit.py
submits for real): the runtime environment and what its working dir package holds, the dependencies
of --deps pip, flag parsing, the address, the exit codes."""
import configparser
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster import jobs
from shards import UserError

REPO = Path(__file__).resolve().parent.parent


def package(root, excludes, target):
    """The zip Ray's own packager makes of `root` with these excludes: what the cluster unpacks."""
    from ray._private.runtime_env.packaging import create_package

    create_package(str(root), target, include_gitignore=True, excludes=excludes)
    return set(zipfile.ZipFile(target).namelist())


def test_the_working_dir_package_holds_the_code_and_configs_but_no_checkpoints_or_venv(tmp_path):
    env = jobs.job_runtime_env()
    assert env["working_dir"] == str(REPO) and "py_modules" not in env and "pip" not in env
    assert env["env_vars"]["PYTHONUNBUFFERED"] == "1"
    names = package(REPO, env["excludes"], tmp_path / "repo.zip")
    for shipped in ("pipeline/cli.py", "cluster/runtime-env.yaml", "training/data/__init__.py", "setup.cfg"):
        assert shipped in names, shipped
    assert any(n.startswith("configs/") for n in names)
    for left in ("checkpoints/", "runs/", "demo-output/", ".venv/", ".git/"):
        assert not any(n.startswith(left) for n in names), left
    assert not any("__pycache__" in n for n in names)
    assert (tmp_path / "repo.zip").stat().st_size < 20e6


def test_the_excludes_are_anchored_at_the_top(tmp_path):
    """A top-level data/ (datasets) stays behind; training/data/ (code) goes."""
    tree = tmp_path / "tree"
    for path in ("data/shard.arrow", "checkpoints/demo/model.safetensors", "runs/r/metrics.jsonl",
                 "demo-output/grid.png", ".venv/bin/python", "training/data/__init__.py",
                 "training/checkpoints.txt", "pkg/__pycache__/m.pyc", "configs/demo.yaml"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text("x")
    names = package(tree, jobs.default_runtime_env()["excludes"], tmp_path / "tree.zip")
    files = {n for n in names if not n.endswith("/")}
    assert files == {"training/data/__init__.py", "training/checkpoints.txt", "configs/demo.yaml"}


def test_another_working_dir_gets_the_packages_beside_it_and_a_runtime_env_file_merges_on_top(tmp_path):
    extra = tmp_path / "env.yaml"
    extra.write_text("env_vars: {GLIDE_X: 1}\nexcludes: [/big/]\n")
    env = jobs.job_runtime_env(working_dir=str(tmp_path), extra_file=str(extra))
    assert env["working_dir"] == str(tmp_path)
    assert sorted(Path(p).name for p in env["py_modules"]) == sorted(jobs.PACKAGES)
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1", "GLIDE_X": "1"}
    assert env["excludes"][-1] == "/big/" and "/checkpoints/" in env["excludes"]
    with pytest.raises(UserError, match="runtime environment file not found"):
        jobs.job_runtime_env(extra_file=str(tmp_path / "missing.yaml"))


def test_deps_pip_ships_setup_cfg_install_requires_but_never_ray():
    env = jobs.job_runtime_env(deps=jobs.Deps.PIP)
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    declared = [line.split("#")[0].strip() for line in cfg["options"]["install_requires"].splitlines()]
    declared = [d for d in declared if d and not d.startswith("ray")]

    def name(req):
        return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")

    assert sorted(map(name, env["pip"]["packages"])) == sorted(map(name, declared))
    assert not any(name(p) == "ray" for p in env["pip"]["packages"])


def test_flag_values_parse_or_name_the_flag():
    assert jobs.parse_memory("8GiB") == 8 * 2**30 and jobs.parse_memory("512M") == 512 * 10**6
    assert jobs.parse_memory("1000") == 1000
    assert jobs.parse_mapping("head_node=1,crawl=0.5", "--resources", number=True) == {"head_node": 1.0,
                                                                                       "crawl": 0.5}
    assert jobs.parse_mapping('{"node-pool": "gpu"}', "--node-labels", number=False) == {"node-pool": "gpu"}
    for bad in ("8 parsecs", "lots"):
        with pytest.raises(UserError, match="--memory"):
            jobs.parse_memory(bad)
    for bad in ("crawl", "crawl=-1", "crawl=x", "[1]"):
        with pytest.raises(UserError, match="--resources"):
            jobs.parse_mapping(bad, "--resources", number=True)
    resources = jobs.EntrypointResources(num_cpus=1, resources={"head_node": 1})
    assert resources.submit_kwargs() == {"entrypoint_num_cpus": 1, "entrypoint_resources": {"head_node": 1}}


def test_the_address_comes_from_the_flag_then_rays_variables(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "http://from-ray-address:8265")
    assert jobs.given_address("http://flag:8265") == "http://flag:8265"
    assert jobs.given_address(None) == "http://from-ray-address:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265")
    assert jobs.given_address(None) == "http://api:8265"


def test_an_unreachable_cluster_is_bad_input_naming_the_address():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=rf"http://127.0.0.1:{port}: cannot reach the Ray Jobs API .*--address"):
        jobs.connect(f"http://127.0.0.1:{port}")


def test_the_exit_code_is_the_jobs():
    from ray.job_submission import JobStatus

    def info(status, code):
        return SimpleNamespace(status=status, driver_exit_code=code)

    assert jobs.exit_code(info(JobStatus.SUCCEEDED, 0)) == 0
    assert jobs.exit_code(info(JobStatus.FAILED, 2)) == 2  # the command's bad input
    assert jobs.exit_code(info(JobStatus.FAILED, 1)) == 1
    assert jobs.exit_code(info(JobStatus.FAILED, None)) == 1  # e.g. the runtime env could not be set up
    assert jobs.exit_code(info(JobStatus.STOPPED, None)) == 1


def test_the_submitted_command_is_checked_here_first(capsys):
    from pipeline.cli import main

    assert main(["submit", "--address", "http://127.0.0.1:9", "--"]) == 2
    assert "give the glide command to run after --" in capsys.readouterr().err
    assert main(["submit", "--", "jobs", "list"]) == 2
    assert "'jobs' talks to the Jobs API itself" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", "--", "no-such-command"])
    assert exit_info.value.code == 2 and "invalid choice: 'no-such-command'" in capsys.readouterr().err
    assert main(["submit", "--memory", "lots", "--", "model", "list"]) == 2
    assert "--memory 'lots'" in capsys.readouterr().err


def test_a_refused_submission_says_why_in_one_line():
    class Refusing:
        def __init__(self, text):
            self.text = text

        def get_address(self):
            return "http://head:8265"

        def submit_job(self, **kwargs):
            raise RuntimeError(self.text)

    duplicate = Refusing("Request failed with status code 500: Traceback (most recent call last):\n  File ...\n"
                         "ValueError: Job with submission_id glide-x already exists. Please use a different one.")
    with pytest.raises(UserError, match="^--submission-id glide-x: the cluster has a job with this id already$"):
        jobs.submit(duplicate, ["model", "list"], {}, jobs.EntrypointResources(), "glide-x")
    with pytest.raises(UserError, match="job refused: ValueError: bad runtime_env"):
        jobs.submit(Refusing("Request failed with status code 400: \nValueError: bad runtime_env"),
                    ["model", "list"], {}, jobs.EntrypointResources())
    with pytest.raises(RuntimeError, match="job not submitted: KeyError: boom$"):  # the cluster's fault: exit 1
        jobs.submit(Refusing("Request failed with status code 500: Traceback\nKeyError: boom"), ["model", "list"], {},
                    jobs.EntrypointResources())
