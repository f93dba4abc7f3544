"""A non-editable `pip install .` ships what `glide` needs: the named model configs are package data.

Nothing can be downloaded, so the fresh venv borrows this environment's installed dependencies: a
.pth line adds .venv's site-packages to sys.path without processing the .pth files inside it, so the
editable install of this checkout stays invisible and `training` must come from the new install.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def source_copy(dest: Path) -> Path:
    """The working tree as git sees it (tracked and untracked-but-not-ignored files, uncommitted
    edits included) without build outputs or the venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():  # a file deleted in the working tree is still listed until committed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def installed_venv(root: Path, source: Path) -> Path:
    """A venv at root/venv with `source` pip-installed (not editable) over this env's dependencies."""
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--ignore-installed", "--disable-pip-version-check", str(source)],
                   cwd=root, env=clean_env(), capture_output=True, text=True, check=True, timeout=600)
    return env_dir


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_installed_glide_finds_the_named_model_configs(tmp_path):
    env_dir = installed_venv(tmp_path, source_copy(tmp_path / "src"))
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may come from the working tree
    elsewhere.mkdir()
    where = subprocess.run([env_dir / "bin" / "python", "-c", "import training; print(training.__file__)"],
                           cwd=elsewhere, env=clean_env(), capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout

    counts = {"glide-filtered-base": "385,030,726", "glide-paper-base": "3,554,414,086"}
    for name, total in counts.items():
        run = subprocess.run([env_dir / "bin" / "glide", "model", "info", name], cwd=elsewhere, env=clean_env(),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert total in run.stdout and "params: text" in run.stdout, run.stdout
        assert str(env_dir) in run.stdout  # the config came from the installed package
