"""One process per run directory: a second one is refused naming the holder's PID (in a sweep the other jobs
go on), a kill -9'd holder leaves no stale lock; stale temporary files and missing logs beside last.pt."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import compose_config, run_py, start_py

from experiments.train.errors import UsageError
from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train.files import read_json
from experiments.runs.runlock import LOCK_NAME, RunLock
from experiments.train.trainer import Hooks

from tests.helpers import ROOT
BASE = ["trainer.epochs=2", "trainer.progress=false", "dataset.test_size=1437"]


def make_cfg(root, *extra):
    overrides = [f"runs_root={root}", *BASE, *extra]
    return compose_config(overrides), overrides


def stop_after(n):
    def hook(trainer, epoch):
        if epoch == n:
            raise KeyboardInterrupt

    return Hooks(on_epoch_end=hook)


def test_the_lock_names_its_holder_and_is_gone_after_release(tmp_path):
    first = RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"PID {os.getpid()} ")
    with pytest.raises(
        UsageError, match=rf"in use by another process \(PID {os.getpid()} on .*, which holds"
    ):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        with pytest.raises(UsageError):
            RunLock(tmp_path).acquire()


HOLDER = """
import sys, time
from experiments.runs.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    path = run_dir(cfg)
    path.mkdir(parents=True)
    holder = start_py("-c", HOLDER, str(path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        # A sweep over seed 0 (held) and seed 1: the held job is reported in one sentence, the sweep goes on.
        proc = run_py("-m", "seed=0,1", *overrides)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"error: {path} is in use by another process (PID {holder.pid} on " in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (path / "summary.json").exists() and not (path / "config.yaml").exists()
        other = json.loads((tmp_path / "default/digits_cnn/adamx/seed1/summary.json").read_text())
        assert other["status"] == "finished"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (path / LOCK_NAME).exists()  # kill -9: the file stays, but the kernel dropped the lock
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert not (path / LOCK_NAME).exists()


@pytest.mark.heavy
def test_stale_temporaries_go_on_the_next_start_and_force_clears_everything(tmp_path, capsys):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after(1))
    path = run_dir(cfg)
    stale = [path / ".last.pt.abc123.tmp", path / ".summary.json.x9.tmp"]
    for tmp in stale:
        tmp.write_text("half a file")
    (path / "notes.txt").write_text("mine")
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert "removed 2 stale temporary file(s)" in capsys.readouterr().out
    assert not any(tmp.exists() for tmp in stale)

    (path / ".best.pt.q1.tmp").write_text("half")
    (path / "step.pt").write_bytes(b"a mid-epoch checkpoint")
    forced, overrides = make_cfg(tmp_path, "force=true", "trainer.epochs=1")
    assert run_experiment(forced, overrides)["status"] == "finished"
    names = {p.name for p in path.iterdir()}
    assert names == {
        "config.yaml",
        "train.csv",
        "eval.csv",
        "summary.json",
        "last.pt",
        "best.pt",
        "notes.txt",
    }
    assert read_json(path / "summary.json")["epochs"] == 1


def test_missing_logs_beside_last_pt_are_refused(tmp_path):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after(1))
    path = run_dir(cfg)
    for name in ("train.csv", "eval.csv"):
        (path / name).rename(path / f"{name}.bak")
        with pytest.raises(
            UsageError, match=rf"holds last\.pt \(epoch 1, step 12\) but not {name}.*force=true"
        ):
            run_experiment(cfg, overrides)
        (path / f"{name}.bak").rename(path / name)
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert len((path / "train.csv").read_text().splitlines()) == 1 + 24


def test_deleting_the_lock_file_does_not_let_a_second_process_in(tmp_path):
    """A clean-up that deletes .run.lock while a run trains must not let another process train the same
    directory: the holder also locks the directory itself, which nothing can delete from under it."""
    holder = start_py("-c", HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / LOCK_NAME).unlink()
        with pytest.raises(UsageError, match=rf"{tmp_path} is in use by another process"):
            RunLock(tmp_path).acquire()
        assert not (tmp_path / LOCK_NAME).exists()  # the refused process leaves no lock file behind either
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the holder died: the kernel dropped its locks
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"PID {os.getpid()} ")
