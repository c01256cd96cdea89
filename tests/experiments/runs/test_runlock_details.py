"""RunLock's file and the probe sweep_status uses: the lock file is rewritten whole (a longer stale text from
an earlier holder leaves no tail), made with mode 0644 under the usual umask, and ``lock_held`` sees a holder
that locks only the file (a run started by the previous release, or a file system without directory locks)."""

from __future__ import annotations

import fcntl
import os
import socket
import stat

import pytest

from experiments.runs.runlock import LOCK_NAME, RunLock, lock_held
from tests.helpers import start_py

FILE_ONLY_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_file_holds_exactly_this_process_and_is_0644(tmp_path):
    (tmp_path / LOCK_NAME).write_text("PID 99999999 on a-much-longer-host-name-from-an-earlier-holder.example\n")
    before = os.umask(0o022)
    try:
        with RunLock(tmp_path):
            assert (tmp_path / LOCK_NAME).read_text() == f"PID {os.getpid()} on {socket.gethostname()}\n"
        with RunLock(tmp_path):
            assert stat.S_IMODE((tmp_path / LOCK_NAME).stat().st_mode) == 0o644
    finally:
        os.umask(before)


def test_lock_held_sees_a_holder_of_the_file_alone(tmp_path):
    assert lock_held(tmp_path) is None  # no lock file, nobody holds the directory
    holder = start_py("-c", FILE_ONLY_HOLDER, str(tmp_path / LOCK_NAME))
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert lock_held(tmp_path) is True
    finally:
        holder.kill()
        holder.wait()
    assert lock_held(tmp_path) is False  # the file is there, nobody holds it
    with RunLock(tmp_path):
        assert lock_held(tmp_path) is True  # flock locks belong to open files: the probe sees this one too


def test_a_refusal_quotes_at_most_200_characters_of_the_holders_note(tmp_path):
    from experiments.runs.runlock import RunLock as Lock

    (tmp_path / LOCK_NAME).write_text("P" * 500)
    message = str(Lock(tmp_path)._refuse())
    assert ("(" + "P" * 200 + ",") in message and "P" * 201 not in message


def test_a_lock_file_removed_under_the_acquirer_is_retried_without_leaking(tmp_path, monkeypatch):
    """The holder we raced removes .run.lock between our open() and our flock (its release): we locked a file
    no longer on disk, so we drop it and lock the new one. Five such acquisitions leave no open file behind,
    and each holds the file that is on disk."""
    from experiments.runs import runlock

    real_flock, raced = runlock.fcntl.flock, []

    def flock(fd, how):
        real_flock(fd, how)
        if how == fcntl.LOCK_EX | fcntl.LOCK_NB and stat.S_ISREG(os.fstat(fd).st_mode) and not raced:
            raced.append(fd)
            os.unlink(tmp_path / LOCK_NAME)  # what the previous holder's release does

    monkeypatch.setattr(runlock.fcntl, "flock", flock)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        raced.clear()
        with RunLock(tmp_path) as lock:
            assert raced and os.fstat(lock._fd).st_ino == (tmp_path / LOCK_NAME).stat().st_ino
            assert (tmp_path / LOCK_NAME).read_text() == f"PID {os.getpid()} on {socket.gethostname()}\n"
    assert len(os.listdir("/proc/self/fd")) == before
