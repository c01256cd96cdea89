"""The run directory: where a run's config, logs, summary and checkpoints live, written atomically.

``<runs_root>/<experiment_name>/<model.name>/<optimizer.name with + as _>/seed<seed>/`` holds
config.yaml, train.csv, eval.csv, summary.json, last.pt and best.pt (docs/architecture.md).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

try:  # the harness always has omegaconf; a bare torch image (scripts/gpu_acceptance.py) needs only the trainer
    from omegaconf import DictConfig, OmegaConf
except ImportError:  # pragma: no cover - exercised on the GPU image only
    DictConfig, OmegaConf = Any, None


def path_safe(name: str) -> str:
    """A config name as a directory name (``adam+adax`` -> ``adam_adax``)."""
    return str(name).replace("+", "_").replace("/", "_").replace(" ", "_")


if OmegaConf is not None and not OmegaConf.has_resolver("path_safe"):
    OmegaConf.register_new_resolver("path_safe", path_safe)


def run_dir(cfg: DictConfig) -> Path:
    """The run directory a config trains into (the same rule ``configs/config.yaml`` gives Hydra)."""
    return (
        Path(str(cfg.runs_root))
        / path_safe(cfg.experiment_name)
        / path_safe(cfg.model.name)
        / path_safe(cfg.optimizer.name)
        / f"seed{cfg.seed}"
    )


def show_tracebacks(cfg: DictConfig | None = None) -> bool:
    """Whether errors the user can fix should still show their traceback (``debug=true`` or
    ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg is not None and cfg.get("debug", False))


def remove_if_only(directory: Path, names: Sequence[str], stop: Path) -> None:
    """Delete ``directory`` when it holds nothing but files called ``names`` (Hydra's log of a command
    that was refused), then its parents while they are empty, up to but not including ``stop``."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    if any(entry.name not in names or not entry.is_file() for entry in entries):
        return
    for entry in entries:
        entry.unlink(missing_ok=True)
    stop = stop.resolve()
    for folder in (directory, *directory.parents):
        if folder.resolve() == stop or stop not in folder.resolve().parents:
            break
        try:
            folder.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def _atomic(path: Path, write: Any, mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _FILE_MODE)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    _atomic(path, lambda handle: torch.save(obj, handle), mode="wb")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (tensors and plain containers only)."""
    return torch.load(path, map_location=device, weights_only=True)


def write_json(obj: Any, path: Path) -> None:
    _atomic(path, lambda handle: json.dump(obj, handle, indent=2, sort_keys=False, default=str))


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the ``.*.tmp`` files interrupted atomic writes left in ``directory`` (call under the run's
    lock: then no writer of this run is alive); return their names."""
    names = []
    for tmp in directory.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            names.append(tmp.name)
    return names


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_config(cfg: DictConfig, path: Path) -> None:
    _atomic(path, lambda handle: handle.write(OmegaConf.to_yaml(cfg, resolve=True)))


class CsvLog:
    """An append-only CSV with a fixed header; ``truncate`` drops rows past a checkpoint on resume."""

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path, self.fields = path, list(fields)
        self._handle = None
        self._writer: csv.DictWriter | None = None

    def truncate(self, keep: Any) -> None:
        """Keep only the rows for which ``keep(row)`` is true (rows are dicts of strings)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or self.fields
            rows = [row for row in reader if keep(row)]
        self.fields = list(fields)

        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

        _atomic(self.path, write)

    def write(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        if self._writer is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            if new:
                self.fields = list(dict.fromkeys([*self.fields, *rows[0]]))
            self._handle = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._handle, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerows(rows)
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._writer = None, None


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    root = Path(__file__).resolve().parents[1]
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
