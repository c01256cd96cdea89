"""The layers contract in pyproject.toml ([tool.importlinter]) holds for the checkout, and it is not a picture:
an import planted upward (the training loop importing run management, the optimizer library importing the
harness) breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ["adamx", "models", "data", "experiments", "scripts", "tools"]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.txt")
        )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=tree, capture_output=True, text=True, timeout=300, env={"PATH": ""}
    )


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    text = path.read_text()
    head, sep, rest = text.partition("\nimport ")
    path.write_text(head + "\n" + line + sep + rest)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (None, None, None),
        (
            "experiments/train/trainer.py",
            "import experiments.runs.launch",
            "experiments.train.trainer -> experiments.runs.launch",
        ),
        (
            "experiments/tasks/classification.py",
            "import experiments.runs.identity",
            "experiments.tasks.classification -> experiments.runs.identity",
        ),
        ("adamx/registry.py", "import experiments.train.files", "adamx.registry -> experiments.train.files"),
        ("data/files.py", "import models.init", None),  # siblings: models | data are independent
        (
            "experiments/runs/build.py",
            "import scripts.results_io",
            "experiments.runs.build -> scripts.results_io",
        ),
    ],
)
def test_layers_contract_kept_and_broken_by_an_upward_import(tmp_path, module, line, broken):
    tree = _copy(tmp_path)
    if module is not None:
        _plant(tree, module, line)
    done = _lint(tree)
    out = done.stdout + done.stderr
    if module is None:
        assert done.returncode == 0 and "1 kept, 0 broken" in out, out[-3000:]
        return
    assert done.returncode != 0 and "BROKEN" in out, out[-3000:]
    if broken is not None:
        assert broken in out, out[-3000:]
