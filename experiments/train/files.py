"""Files a run writes that must never be half-written or silently lost: atomic writes (temporary file,
fsync, rename), checkpoints, JSON, append-only CSV logs, and the clean-up of interrupted writes."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


class _Recording:
    """A file handle that keeps the OSError of a failed write: ``torch.save`` reports a short write as
    ``[enforce fail at inline_container.cc] unexpected pos``, hiding a full disk behind it."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> Any:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file beside it, fsync, then rename: a crash
    never leaves half a file, and a published file's bytes are on disk. A failed write (a full disk) raises
    the OSError naming ``path``, and the previous ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _FILE_MODE)
    recording = None
    try:
        with os.fdopen(fd, mode) as handle:
            recording = _Recording(handle)
            write(recording)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = recording.error if recording is not None else None
        if isinstance(error, OSError) and error.errno is not None:
            cause = error
        if cause is not None and cause.errno is not None and not isinstance(error, KeyboardInterrupt):
            raise OSError(cause.errno, os.strerror(cause.errno), str(path)) from error
        raise


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    atomic_write(path, lambda handle: torch.save(obj, handle), mode="wb")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (tensors and plain containers only)."""
    return torch.load(path, map_location=device, weights_only=True)


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda handle: json.dump(obj, handle, indent=2, sort_keys=False, default=str))


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


class CsvLog:
    """An append-only CSV with a fixed header; ``truncate`` drops rows past a checkpoint on resume. Each
    ``write`` is fsynced (rows arrive in batches: every ``log_every`` steps, one per evaluation)."""

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

        atomic_write(self.path, write)

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
        os.fsync(self._handle.fileno())  # on disk before a last.pt that counts these rows is published

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._writer = None, None
