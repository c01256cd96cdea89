"""One process per run directory: an ``fcntl.flock`` on the run directory itself and on
``<run dir>/.run.lock``, both held for the whole run.

The directory lock is the one that cannot be taken away: deleting ``.run.lock`` while a run trains (a
clean-up script, a user tidying up) used to let a second process create a new file, lock it and train the
same directory. Nothing can delete the directory's lock while it holds files. The file lock stays for
file systems that cannot lock a directory (an NFS mount emulates flock with POSIX locks, which need a
file opened for writing) and holds the holder's PID and host so that a refused process can name it.
The kernel drops both locks when the process dies, so a kill -9 never leaves a stale lock. Unlocking
deletes the file (while still holding the locks), and an acquirer checks that the file it locked is
still the one on disk, so two processes can never both believe they hold it.

``LOCK_NAME`` and ``lock_held`` are the one place the name and the probe live (scripts/sweep_status.py
imports them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from experiments.train.errors import UsageError

LOCK_NAME = ".run.lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class RunLock:
    """``with RunLock(path): ...`` holds the run directory ``path`` (which must exist) or raises UsageError."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def _refuse(self) -> UsageError:
        holder = ""
        try:
            holder = self.path.read_text(errors="replace").strip()[:200]
        except OSError:
            pass
        return UsageError(
            f"{self.directory} is in use by another process ({holder or 'PID unknown'}, which holds "
            f"{self.path.name}); wait for it to end or stop it, then re-run this command."
        )

    def acquire(self) -> RunLock:
        self._dir_fd = _lock_directory(self.directory, fcntl.LOCK_EX)
        if self._dir_fd == -1:
            self._dir_fd = None
            raise self._refuse()
        try:
            self._fd = self._lock_file()
        except BaseException:
            self._close_dir()
            raise
        return self

    def _lock_file(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse() from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder we waited on removed the file: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        return fd

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._close_dir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_directory(directory: Path, how: int) -> int | None:
    """An fd of ``directory`` holding a ``how`` flock; -1 when another process holds a conflicting one;
    None when this file system cannot lock a directory (the lock file alone then decides)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        return -1 if error.errno in _BUSY else None
    return fd


def lock_held(directory: Path | str) -> bool | None:
    """Whether a process holds the run directory's lock right now; None when that cannot be told (no lock
    file, and the directory's own lock is not held or cannot be probed). The probe takes a shared lock for
    an instant and drops it; a holder keeps its lock."""
    directory = Path(directory)
    fd = _lock_directory(directory, fcntl.LOCK_SH)
    if fd == -1:
        return True
    if fd is not None:
        os.close(fd)
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _BUSY:
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
