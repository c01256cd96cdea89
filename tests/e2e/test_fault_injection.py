"""Fault injection: runs stopped at every interruption point (signals at chosen steps, a simulated kill -9 at
each commit point, a torn CSV line) resume to the uninterrupted run's result bit for bit, and the run
directory agrees with itself after every graceful stop.

Run as a script, this file is a ``run.py`` that pauses at a step so that the test can signal or kill it
from outside (``python tests/e2e/test_fault_injection.py STEP MARKER overrides...``).
"""

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train.files import read_json
from experiments.train.trainer import Hooks, RunInterrupted
from tests.helpers import ROOT, compose_config, run_py, start_py, torch_threads

STEPS = 24  # 360 training images, batch 32: 12 steps per epoch (the last one partial), 2 epochs
# Dropout on: the RNG state at the stop matters.
BASE = [
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.log_every=5",
    "dataset.test_size=1437",
    "model.dropout=0.2",
]
EVERY_STEP = "trainer.checkpoint_every_min=1e-9"  # a periodic mid-epoch checkpoint after every step


class Crash(BaseException):
    """Stands in for kill -9 in-process: no handler of the trainer sees it, so nothing more is written."""


def make_cfg(root, *extra):
    overrides = [f"runs_root={root}", *BASE, *extra]
    return compose_config(overrides), overrides


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same training: CSVs, last.pt weights and optimizer state, best.pt."""
    train_a, train_b = pd.read_csv(a / "train.csv"), pd.read_csv(b / "train.csv")
    assert train_a.step.tolist() == list(range(1, STEPS + 1))
    pd.testing.assert_frame_equal(
        train_a.drop(columns="time"), train_b.drop(columns="time"), check_exact=True
    )
    eval_a, eval_b = pd.read_csv(a / "eval.csv"), pd.read_csv(b / "eval.csv")
    pd.testing.assert_frame_equal(eval_a.drop(columns="time"), eval_b.drop(columns="time"), check_exact=True)
    last_a, last_b = load(a / "last.pt"), load(b / "last.pt")
    assert last_a["step"] == last_b["step"] == STEPS and last_a["best"] == last_b["best"]
    for key in last_a["model"]:
        assert torch.equal(last_a["model"][key], last_b["model"][key]), key
    for sa, sb in zip(last_a["optimizer"]["state"].values(), last_b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    best_a, best_b = load(a / "best.pt"), load(b / "best.pt")
    assert (best_a["epoch"], best_a["step"], best_a["metrics"]) == (
        best_b["epoch"],
        best_b["step"],
        best_b["metrics"],
    )
    for key in best_a["model"]:
        assert torch.equal(best_a["model"][key], best_b["model"][key]), key
    summary_a, summary_b = read_json(a / "summary.json"), read_json(b / "summary.json")
    assert summary_a["status"] == summary_b["status"] == "finished"
    assert summary_a["best"] == summary_b["best"] and summary_a["final"] == summary_b["final"]


def assert_consistent(path: Path) -> dict:
    """summary.json, last.pt, best.pt and both CSVs describe the same committed step; returns last.pt."""
    last, summary = load(path / "last.pt"), read_json(path / "summary.json")
    assert (summary["steps"], summary["epochs_done"]) == (last["step"], last["epoch"])
    assert summary["best"] == last["best"] and summary["final"] == last["final"]
    assert pd.read_csv(path / "train.csv").step.tolist() == list(range(1, last["step"] + 1))
    evals = pd.read_csv(path / "eval.csv").epoch.tolist() if (path / "eval.csv").exists() else []
    assert evals == list(range(1, last["epoch"] + 1))
    record = last["best"].get("top1_err")
    if record is None:
        assert not (path / "best.pt").exists()
    else:
        assert load(path / "best.pt")["step"] == record["step"]
    return last


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread_module):
    cfg, overrides = make_cfg(tmp_path_factory.mktemp("straight"))
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    # epoch 2 improves the primary metric, so the stops around best.pt below replace a real best.pt
    assert summary["best"]["top1_err"]["epoch"] == 2
    return run_dir(cfg)


def at_step(step: int, action):
    return Hooks(on_step_end=lambda trainer: action(trainer) if trainer.step == step else None)


def at_point(epoch: int, point: str, action):
    def hook(trainer, name):
        if name == point and trainer.epoch == epoch:
            action(trainer)

    return Hooks(on_point=hook)


def send(signum):
    return lambda trainer: os.kill(os.getpid(), signum)


def crash(trainer=None):
    raise Crash


# (hooks, signal, the step last.pt holds after the stop)
SIGNAL_STOPS = {
    "SIGTERM mid-epoch 2": (at_step(17, send(signal.SIGTERM)), signal.SIGTERM, 17),
    "SIGUSR1 mid-epoch 1": (at_step(5, send(signal.SIGUSR1)), signal.SIGUSR1, 5),
    "SIGINT mid-epoch 2": (at_step(19, send(signal.SIGINT)), signal.SIGINT, 19),
    "SIGTERM at an epoch's last step": (at_step(12, send(signal.SIGTERM)), signal.SIGTERM, 12),
    "SIGTERM during evaluation": (at_point(1, "evaluating", send(signal.SIGTERM)), signal.SIGTERM, 12),
    "SIGINT between last.pt and best.pt": (at_point(1, "last_saved", send(signal.SIGINT)), signal.SIGINT, 12),
}


@pytest.mark.parametrize("name", SIGNAL_STOPS)
def test_a_signal_stops_at_a_step_consistently_and_the_rerun_is_bit_exact(name, tmp_path, reference):
    hooks, signum, step = SIGNAL_STOPS[name]
    cfg, overrides = make_cfg(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg, overrides, hooks=hooks)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers only while fit() runs
    assert info.value.signum == signum and info.value.exit_code == 128 + signum
    path = run_dir(cfg)
    last = assert_consistent(path)
    summary = read_json(path / "summary.json")
    assert summary["status"] == "interrupted" and signal.Signals(signum).name in summary["reason"]
    assert "re-run the same command" in summary["reason"]
    assert last["step"] == step and last["batch_in_epoch"] == step - 12 * last["epoch"]
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)


def test_a_second_sigint_stops_at_once_and_reports_the_last_commit(tmp_path, reference):
    cfg, overrides = make_cfg(tmp_path)

    def twice(trainer):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt here, before the step-boundary checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=at_step(17, twice))
    path = run_dir(cfg)
    assert assert_consistent(path)["step"] == 12
    assert read_json(path / "summary.json")["status"] == "interrupted"
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)


def crash_on_replace_of(name: str, monkeypatch):
    """Crash inside save_checkpoint's atomic write of ``name``, after the temporary file, before the rename."""
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == name:
            raise Crash
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


# (hooks, extra overrides, the step last.pt holds after the crash)
CRASHES = {
    "mid-epoch after a periodic checkpoint": (at_step(17, crash), [EVERY_STEP], 16),
    "during evaluation": (at_point(2, "evaluating", crash), [], 12),
    "after the eval row": (at_point(2, "eval_logged", crash), [], 12),
    "after last.pt, before best.pt": (at_point(2, "last_saved", crash), [], 24),
    "after best.pt, before summary.json": (at_point(2, "best_saved", crash), [], 24),
    "after epoch 1's best.pt": (at_point(1, "best_saved", crash), [], 12),
}


@pytest.mark.parametrize("name", CRASHES)
def test_a_hard_kill_at_each_commit_point_resumes_bit_exactly(name, tmp_path, reference):
    hooks, extra, step = CRASHES[name]
    cfg, overrides = make_cfg(tmp_path, *extra)
    with pytest.raises(Crash):
        run_experiment(cfg, overrides, hooks=hooks)
    path = run_dir(cfg)
    assert read_json(path / "summary.json")["status"] == "running"  # what kill -9 leaves
    assert load(path / "last.pt")["step"] == step
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and not summary.get("skipped")
    assert_same_run(path, reference)


def test_a_kill_inside_best_pt_rename_leaves_a_stale_best_pt_that_resume_rebuilds(
    tmp_path, reference, monkeypatch
):
    cfg, overrides = make_cfg(tmp_path)
    hooks = at_point(2, "last_saved", lambda trainer: crash_on_replace_of("best.pt", monkeypatch))
    with pytest.raises(Crash):
        run_experiment(cfg, overrides, hooks=hooks)
    monkeypatch.undo()
    path = run_dir(cfg)
    last, best = load(path / "last.pt"), load(path / "best.pt")
    assert last["best"]["top1_err"]["step"] == 24 and best["step"] == 12  # the two disagree on disk ...
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)  # ... and the resume makes best.pt last.pt's


def test_a_torn_csv_line_from_a_kill_mid_append_is_dropped(tmp_path, reference):
    cfg, overrides = make_cfg(tmp_path, EVERY_STEP)

    def tear(trainer):
        with open(trainer.run_dir / "train.csv", "a") as handle:
            handle.write("1")  # the first byte of step 17's row: a prefix that parses as step 1
        raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg, overrides, hooks=at_step(17, tear))
    path = run_dir(cfg)
    assert (path / "train.csv").read_bytes().endswith(b"\n1")
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)


def test_any_exception_marks_the_run_failed_with_one_line(tmp_path):
    cfg, overrides = make_cfg(tmp_path)

    def oom(trainer):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nsee the allocator docs")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_experiment(cfg, overrides, hooks=at_step(15, oom))
    summary = read_json(run_dir(cfg) / "summary.json")
    assert summary["status"] == "failed"
    assert summary["reason"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert summary["steps"] == 12 and summary["epochs_done"] == 1  # what last.pt holds, not step 15


def test_second_sigint_raises_at_once_and_handlers_are_restored():
    from experiments.train.signals import StopRequests

    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signum == signal.SIGTERM  # the first request names the stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a stop is pending: Ctrl-C now means now
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------- real processes


def _run_maps_run_interrupted() -> bool:
    """Whether run.py turns RunInterrupted into its exit code (the launch side's part of issue 10)."""
    return "RunInterrupted" in (ROOT / "run.py").read_text()


def start_paused(tmp_path: Path, step: int, *extra: str) -> tuple[subprocess.Popen, list[str], Path]:
    """This file as run.py, paused after ``step`` until a signal arrives; returns once it is there."""
    overrides = [f"runs_root={tmp_path}", *BASE, *extra]
    marker = tmp_path / "paused"
    proc = start_py(__file__, str(step), str(marker), *overrides)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the pause"
        time.sleep(0.05)
    return proc, overrides, Path(str(run_dir(compose_config(overrides))))


def rerun(overrides: list[str]) -> subprocess.CompletedProcess:
    return run_py(*overrides, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_run_py_signalled_from_outside_exits_with_the_signal_code(signum, tmp_path, reference):
    proc, overrides, path = start_paused(tmp_path, 17)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    if _run_maps_run_interrupted():
        assert proc.returncode == 128 + signum, err[-2000:]
    else:  # until run.py maps RunInterrupted, it escapes as an exception (exit 1)
        assert proc.returncode not in (0, -signum), err[-2000:]
    summary = read_json(path / "summary.json")
    assert summary["status"] == "interrupted" and signal.Signals(signum).name in summary["reason"]
    assert assert_consistent(path)["step"] == 17
    if signum == signal.SIGTERM:  # one of them resumes through run.py to the uninterrupted result
        done = rerun(overrides)
        assert done.returncode == 0 and "resuming" in done.stdout, done.stderr[-2000:]
        assert_same_run(path, reference)


@pytest.mark.slow
def test_run_py_killed_with_sigkill_resumes_from_its_last_periodic_checkpoint(tmp_path, reference):
    proc, overrides, path = start_paused(tmp_path, 17, EVERY_STEP)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert read_json(path / "summary.json")["status"] == "running"
    assert load(path / "last.pt")["step"] == 16  # step 17's checkpoint was not reached
    done = rerun(overrides)
    assert done.returncode == 0 and "batch 4 of epoch 2" in done.stdout, done.stderr[-2000:]
    assert_same_run(path, reference)


def _pause_at(step: int, marker: Path):
    def hook(trainer):
        if trainer.step == step:
            marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (trainer._stop and trainer._stop.signum):
                time.sleep(0.02)

    return Hooks(on_step_end=hook)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from experiments.runs import launch

    pause_step, pause_marker = int(sys.argv[1]), Path(sys.argv[2])
    real_run = launch.run_experiment
    launch.run_experiment = lambda cfg, overrides, hooks=None: real_run(
        cfg, overrides, hooks=_pause_at(pause_step, pause_marker)
    )
    sys.argv = [str(ROOT / "run.py"), *sys.argv[3:]]
    with torch_threads(1):
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")  # Hydra finds configs/ beside run.py
