"""StopRequests in-process: the first signal is recorded, a second Ctrl-C raises at once except inside a
commit, where it is held to the commit's end and raised once (a later commit is not cut by it again)."""

from __future__ import annotations

import os
import signal

import pytest

from experiments.train.files import atomic_write
from experiments.train.signals import StopRequests


def test_a_second_ctrl_c_inside_a_commit_waits_for_its_end_and_is_raised_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    with StopRequests((signal.SIGINT,)) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first: only recorded
        done = []
        with pytest.raises(KeyboardInterrupt):
            with stop.commit():
                os.kill(os.getpid(), signal.SIGINT)  # the second, mid-commit
                done.append("rest of the commit")
        assert done == ["rest of the commit"]
        with stop.commit():  # the held Ctrl-C was spent: the next commit runs through
            done.append("next commit")
        assert done[-1] == "next commit"
        with pytest.raises(KeyboardInterrupt):  # outside a commit a second Ctrl-C raises at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored, whatever it was


def test_handlers_are_restored_after_each_use():
    for _ in range(2):
        with StopRequests((signal.SIGUSR1,)):
            assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_atomic_write_makes_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write(target, lambda handle: handle.write("x"))
    assert target.read_text() == "x"


def test_under_submitit_its_preemption_signal_is_a_stop_signal_too(monkeypatch):
    from experiments.train.signals import STOP_SIGNALS, stop_signals

    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert stop_signals() == STOP_SIGNALS
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert stop_signals() == (*STOP_SIGNALS, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # already a stop signal: not listed twice
    assert stop_signals() == STOP_SIGNALS
