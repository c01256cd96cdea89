"""Provenance a run records in summary.json: the checkout's git commit and the versions that decide
what a run computes."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions that decide what a run computes."""
    out = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform()}
    for name in ("adamx", "torchvision", "hydra-core", "omegaconf", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)  # no import: torchvision alone takes seconds
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["cudnn"] = str(torch.backends.cudnn.version())
    return out
