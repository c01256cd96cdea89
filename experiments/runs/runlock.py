"""One process per run directory: an ``fcntl.flock`` on ``<run dir>/.run.lock`` held for the whole run.

The kernel drops the lock when its process dies, so a kill -9 never leaves a stale lock; the file holds
the holder's PID and host so that a refused process can name it. Unlocking deletes the file (while still
holding the lock), and an acquirer checks that the file it locked is still the one on disk, so two
processes can never both believe they hold it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from experiments.train.errors import UsageError

LOCK_NAME = ".run.lock"


class RunLock:
    """``with RunLock(path): ...`` holds the run directory ``path`` (created if needed) or raises UsageError."""

    def __init__(self, directory: Path | str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise UsageError(
                    f"{self.path.parent} is in use by another process ({holder or 'PID unknown'}, which holds "
                    f"{self.path.name}); wait for it to end or stop it, then re-run this command."
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder we waited on removed the file: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
