"""The project's launcher configs (configs/hydra/launcher/): they compose into what the plugins accept, a
joblib sweep finishes every job into its own run directory, and a submitit job that gets its preemption
signal is requeued and ends where an uninterrupted run ends."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.runs import requeue
from experiments.train import signals
from scripts import sweep_status
from tests.helpers import ROOT, compose_config, start_py


def run_py(*args, **popen):
    """run.py in the background, stdout and stderr merged."""
    return start_py(str(ROOT / "run.py"), *args, stderr=subprocess.STDOUT, **popen)


# ---------------------------------------------------------------------- the config files


def test_gpus_launcher_is_joblib_with_one_job_per_gpu_of_an_8_gpu_box():
    launcher = compose_config(["hydra/launcher=gpus"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 8
    launcher = compose_config(["hydra/launcher=gpus", "hydra.launcher.n_jobs=4"], hydra=True).hydra.launcher
    assert launcher.n_jobs == 4


def test_slurm_launcher_writes_the_sbatch_script_we_mean(tmp_path, monkeypatch):
    """Run the real SlurmLauncher.launch up to the submission and read the sbatch script it would submit."""
    import submitit
    from hydra.utils import instantiate

    cfg = compose_config(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            f"runs_root={tmp_path}",
            "hydra.job.name=run",
        ],
        hydra=True,
    )
    seen = {}

    def fake_map_array(self, fn, *args):
        seen["executor"] = self
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    launcher.launch([["seed=0"]], initial_job_idx=0)
    executor = seen["executor"]._executor
    assert executor.max_num_timeout == 5
    script = executor._make_submission_file_text("python -m submitit.core._submit folder", "uid")
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--time=1440",
        "--signal=USR2@180",
        "--job-name=run",
    ):
        assert f"#SBATCH {flag}\n" in script, flag
    assert f"{tmp_path}/.submitit/%j" in script


def test_local_submitit_launcher_composes():
    launcher = compose_config(["hydra/launcher=local"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("LocalLauncher")
    assert launcher.timeout_min == 60 and launcher.gpus_per_node == 0


# ---------------------------------------------------------------------- experiments/runs/requeue.py


def test_submitit_signal_is_usr2_unless_submitit_is_told_otherwise(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv(signals.PREEMPT_SIGNAL_ENV, raising=False)
    assert signals.submitit_signal() is None
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert signals.submitit_signal() == signal.SIGUSR2
    monkeypatch.setenv(signals.PREEMPT_SIGNAL_ENV, "USR1")
    assert signals.submitit_signal() == signal.SIGUSR1
    monkeypatch.setenv(signals.PREEMPT_SIGNAL_ENV, "HUP2")
    with pytest.raises(ValueError, match="SUBMITIT_PREEMPT_SIGNAL='HUP2' names no signal"):
        signals.submitit_signal()


def test_requeue_hands_only_submitits_own_signal_back_to_submitits_handler(monkeypatch):
    calls = []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.delenv(signals.PREEMPT_SIGNAL_ENV, raising=False)
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        kept = requeue.SubmititRequeue.capture()
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the trainer's handler takes over...
        kept.after(signal.SIGTERM)  # ...a SIGTERM stop is not submitit's business
        assert calls == []
        kept.after(signal.SIGUSR2)
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    outside = requeue.SubmititRequeue.capture()
    assert not outside.active
    outside.after(signal.SIGUSR2)  # outside submitit: nothing to do


# ---------------------------------------------------------------------- end to end on CPU


@pytest.mark.slow
def test_joblib_sweep_finishes_six_runs_and_sweep_status_lists_them(tmp_path):
    proc = run_py(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.epochs=2",
        "seed=0,1,2",
        "optimizer=adamx,adam",
        f"runs_root={tmp_path}",
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out
    runs = sorted(p.parent for p in tmp_path.rglob("summary.json"))
    expected = [
        tmp_path / "default/digits_cnn" / opt / f"seed{s}" for opt in ("adam", "adamx") for s in (0, 1, 2)
    ]
    assert runs == expected
    for path in runs:
        assert json.loads((path / "summary.json").read_text())["status"] == "finished", path
        assert len(pd.read_csv(path / "train.csv")) == 2 * 45  # each job wrote only its own directory
    status = subprocess.run(
        [sys.executable, str(ROOT / "scripts/sweep_status.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout (the venv's .pth may name another)
    )
    assert status.returncode == 0, status.stderr
    assert f"6 runs under {tmp_path}: 6 finished" in status.stdout
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith("default ")]
    assert sorted((r[2], r[3], r[4], r[5]) for r in rows) == sorted(
        (opt, str(s), "finished", "2/2") for opt in ("adam", "adamx") for s in (0, 1, 2)
    )


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _submitit_task(pid: int) -> int | None:
    for child in _descendants(pid):
        try:
            cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline:
            return child
    return None


INTERRUPT_AFTER_STEP = 60  # of 2 x 45: in the middle of epoch 2


@pytest.fixture(scope="module")
def requeued_and_reference(tmp_path_factory):
    """One run under the local submitit launcher, sent submitit's signal mid-epoch, next to the same run
    made in one go; both in flight at once."""
    tmp = tmp_path_factory.mktemp("requeue")
    args = ["trainer.epochs=2", "trainer.log_every=1", "seed=3"]
    reference = run_py(*args, f"runs_root={tmp / 'reference'}")
    job = run_py("-m", "hydra/launcher=local", *args, f"runs_root={tmp / 'submitit'}")
    run = tmp / "submitit/default/digits_cnn/adamx/seed3"
    signalled = None
    deadline = time.monotonic() + 300
    while signalled is None and time.monotonic() < deadline and job.poll() is None:
        rows = sweep_status.csv_tail(run / "train.csv")
        if rows is not None and int(rows["step"]) >= INTERRUPT_AFTER_STEP:
            task = _submitit_task(job.pid)
            if task is not None:
                os.kill(task, signals.preempt_signal())
                signalled = int(rows["step"])
        time.sleep(0.05)
    try:
        job_out, _ = job.communicate(timeout=600)
        ref_out, _ = reference.communicate(timeout=600)
    finally:
        for proc in (job, reference):
            if proc.poll() is None:  # timed out: leave nothing running behind the test
                for pid in _descendants(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()
    logs = "".join(p.read_text() for p in sorted((tmp / "submitit/.submitit").rglob("*_log.out")))
    return {
        "run": run,
        "reference": tmp / "reference/default/digits_cnn/adamx/seed3",
        "signalled": signalled,
        "job": (job.returncode, job_out),
        "ref": (reference.returncode, ref_out),
        "logs": logs,
    }


@pytest.mark.slow
def test_submitit_job_signalled_mid_run_is_requeued_and_equals_an_uninterrupted_run(requeued_and_reference):
    r = requeued_and_reference
    assert r["ref"][0] == 0, r["ref"][1][-3000:]
    assert r["job"][0] == 0, r["job"][1][-3000:] + r["logs"][-3000:]
    assert r["signalled"] is not None, "the run finished before it could be signalled"
    assert "this job is preempted" in r["logs"] and "Requeued job" in r["logs"], r["logs"][-3000:]
    assert r["logs"].count("Starting with JobEnvironment") == 2  # the first attempt and the requeued one
    assert re.search(r"resuming .*seed3 from epoch", r["logs"]), r["logs"][-3000:]
    summary = json.loads((r["run"] / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 90
    train, ref_train = pd.read_csv(r["run"] / "train.csv"), pd.read_csv(r["reference"] / "train.csv")
    assert train.step.tolist() == list(range(1, 91))
    pd.testing.assert_series_equal(train.loss, ref_train.loss)  # bit for bit on CPU
    evals, ref_evals = pd.read_csv(r["run"] / "eval.csv"), pd.read_csv(r["reference"] / "eval.csv")
    pd.testing.assert_frame_equal(evals.drop(columns="time"), ref_evals.drop(columns="time"))
    model = torch.load(r["run"] / "last.pt", weights_only=True)["model"]
    ref_model = torch.load(r["reference"] / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(model[k], ref_model[k]) for k in ref_model)


@pytest.mark.slow
def test_the_requeued_job_resumes_from_a_mid_epoch_checkpoint(requeued_and_reference):
    r = requeued_and_reference
    line = next((line for line in r["logs"].splitlines() if "resuming" in line and "seed3" in line), "")
    match = re.search(r"step (\d+)", line)
    assert match, r["logs"][-3000:]
    # The signal came after step 60 of 90 (mid epoch 2): the trainer finished its step and checkpointed
    # there, instead of submitit killing it and the requeued job redoing epoch 2 from step 45.
    assert int(match.group(1)) >= r["signalled"] > 45 and int(match.group(1)) % 45 != 0
