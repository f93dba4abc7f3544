"""Which code produced an artefact: the git commit and whether the tree had uncommitted changes."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_state() -> dict:
    """{"commit", "uncommitted_changes", "changed_files"}; commit "unknown" outside a git checkout (a job
    submitted to a cluster runs in a packaged copy of the working directory)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
        return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_changes": bool(changed),
                "changed_files": changed}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "uncommitted_changes": None, "changed_files": []}
