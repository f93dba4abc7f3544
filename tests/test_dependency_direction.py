"""The import arrows of ARCHITECTURE "Layout", checked on the source so a wrong import fails CI.

    pipeline (orchestration) -> filtering, training, evaluation, cluster (libraries) -> shards (contract)

- `shards` imports only the standard library, pyarrow, fsspec and tqdm;
- no library imports `pipeline`;
- `training` never imports `filtering` or `evaluation` (evaluation may import training to sample).
Imports inside functions count too: a lazy import is still an arrow.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"shards", "pipeline", "training", "filtering", "evaluation", "cluster"}
SHARDS_THIRD_PARTY = {"pyarrow", "fsspec", "tqdm"}

FORBIDDEN = {
    "training": {"pipeline", "filtering", "evaluation", "cluster"},
    "filtering": {"pipeline", "evaluation", "cluster"},
    "evaluation": {"pipeline", "cluster"},
    "cluster": {"pipeline", "training", "filtering", "evaluation"},
}


def imported_modules(path: Path):
    """(line, top-level module) for every absolute import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(root: Path) -> list[str]:
    found = []
    for package in sorted(PROJECT):
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for line, top in imported_modules(path):
                if package == "shards":
                    allowed = top == "shards" or top in SHARDS_THIRD_PARTY or top in sys.stdlib_module_names
                    if not allowed:
                        found.append(f"{where}:{line}: the shard contract imports {top!r} "
                                     f"(only the standard library, pyarrow, fsspec, tqdm)")
                elif top in FORBIDDEN.get(package, ()):
                    found.append(f"{where}:{line}: {package} imports {top!r}")
    return found


def test_the_source_tree_keeps_the_dependency_direction():
    assert violations(ROOT) == []


@pytest.mark.parametrize("package,line,expected", [
    ("training", "import pipeline\n", "training imports 'pipeline'"),
    ("training", "def f():\n    from pipeline.config import load_config\n", "training imports 'pipeline'"),
    ("training", "from filtering import svm\n", "training imports 'filtering'"),
    ("filtering", "from pipeline import cli\n", "filtering imports 'pipeline'"),
    ("evaluation", "import pipeline.stage_runner\n", "evaluation imports 'pipeline'"),
    ("shards", "import torch\n", "the shard contract imports 'torch'"),
    ("shards", "from training import load\n", "the shard contract imports 'training'"),
])
def test_a_wrong_import_is_reported_with_file_and_line(tmp_path, package, line, expected):
    for name in PROJECT:
        (tmp_path / name).mkdir()
    (tmp_path / package / "bad.py").write_text("import os\n" + line)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"{package}/bad.py:") and expected in found[0]


def test_allowed_arrows_are_not_reported(tmp_path):
    for name in PROJECT:
        (tmp_path / name).mkdir()
    (tmp_path / "pipeline" / "ok.py").write_text("import training\nimport filtering\nimport shards\n")
    (tmp_path / "evaluation" / "ok.py").write_text("from training.sampling import session\nimport shards\n")
    (tmp_path / "shards" / "ok.py").write_text("import json, hashlib\nimport pyarrow as pa\nimport fsspec\n"
                                               "from . import errors\n")
    assert violations(tmp_path) == []
