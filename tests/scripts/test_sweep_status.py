"""scripts/sweep_status.py on a runs root laid out by hand: finished, running (a live lock holder),
dead, failed and interrupted runs, as the trainer's summary.json and CSVs describe them."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from experiments.runs import runlock
from experiments.runs.runlock import LOCK_NAME, RunLock
from scripts import sweep_status
from tests.helpers import ROOT

HOLD_LOCK = """
import sys
from experiments.runs.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def make_run(
    root, optimizer, seed, status, *, epochs_done=2, epochs=4, per_epoch=45, reason=None, step=None, t=None
):
    """A run directory as experiments/train/trainer.py leaves it (write_summary's keys, the CSV headers)."""
    path = root / "table3" / "digits_cnn" / optimizer / f"seed{seed}"
    path.mkdir(parents=True)
    config = {"experiment_name": "table3", "seed": seed, "model": {"name": "digits_cnn"}}
    config |= {"optimizer": {"name": optimizer}, "trainer": {"epochs": epochs}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {
        "status": status,
        "reason": reason,
        "run_dir": str(path),
        "experiment": "table3",
        "model": "digits_cnn",
        "optimizer": optimizer,
        "dataset": "digits",
        "task": "classification",
        "seed": seed,
        "primary_metric": "top1_err",
        "higher_is_better": False,
        "epochs": epochs,
        "epochs_done": epochs_done,
        "steps": epochs_done * per_epoch,
        "steps_per_epoch": per_epoch,
        "best": {"top1_err": {"value": 5.0, "epoch": epochs_done, "step": epochs_done * per_epoch}},
        "final": {"epoch": epochs_done, "step": epochs_done * per_epoch, "metrics": {"top1_err": 5.0 + seed}},
        "wall_time_s": 20.0,
        "train_time_s": 18.0,
        "throughput_samples_per_s": 1234.5,
        "peak_memory_bytes": 1 << 20,
        "device": "cpu",
        "world_size": 1,
        "precision": "fp32",
    }
    (path / "summary.json").write_text(json.dumps(summary))
    step = epochs_done * per_epoch if step is None else step
    t = 0.5 * step if t is None else t
    rows = "".join(
        f"{s},{(s - 1) // per_epoch + 1},0.5,0.001,{t * s / step:.3f}\n" for s in range(1, step + 1)
    )
    (path / "train.csv").write_text("step,epoch,loss,lr,time\n" + rows)
    return path


@pytest.fixture
def lock_holder():
    procs = []

    def hold(path):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def sweep(tmp_path, lock_holder):
    root = tmp_path / "runs"
    make_run(root, "adam", 0, "finished", epochs_done=4)
    make_run(root, "adamx", 0, "finished", epochs_done=4)
    live = make_run(root, "adam", 1, "running", epochs_done=1, step=60, t=30.0)
    lock_holder(live)
    dead = make_run(root, "adamx", 1, "running", epochs_done=1)
    (dead / LOCK_NAME).write_text("12345")  # its holder is gone: nobody has the flock
    make_run(
        root,
        "adam",
        2,
        "failed",
        epochs_done=1,
        reason="loss became nan at step 50 (epoch 2); lower optimizer.lr",
    )
    make_run(root, "adamx", 2, "interrupted", epochs_done=2, reason="interrupted in epoch 3")
    return root


def test_counts_per_status_and_failed_reasons(sweep, capsys):
    assert sweep_status.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"6 runs under {sweep}: 1 running, 1 interrupted, 1 stale, 1 failed, 2 finished" in out
    assert "failed " + str(sweep / "table3/digits_cnn/adam/seed2") + ": loss became nan at step 50" in out
    assert "stale " + str(sweep / "table3/digits_cnn/adamx/seed1") + ": marked running, but no process" in out
    header = next(line for line in out.splitlines() if line.startswith("experiment"))
    for column in ("model", "optimizer", "seed", "status", "epoch", "latest metric", "samples/s", "ETA"):
        assert column in header
    row = next(line for line in out.splitlines() if " running " in line)
    # 60 of 4 x 45 steps done in 30 s: 120 steps at 0.5 s each remain
    assert row.split()[:5] == ["table3", "digits_cnn", "adam", "1", "running"]
    assert "1/4 (33%)" in row and "top1_err 6" in row and "1234.5/s" in row and row.endswith("1m00s")


def test_json_has_the_same_counts_and_each_run(sweep, capsys):
    assert sweep_status.main([str(sweep), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == {"running": 1, "interrupted": 1, "stale": 1, "failed": 1, "finished": 2}
    by_key = {(r["optimizer"], r["seed"]): r for r in data["runs"]}
    assert len(by_key) == 6
    running = by_key[("adam", 1)]
    assert running["step"] == 60 and running["total_steps"] == 180
    assert running["eta_s"] == pytest.approx(60.0)
    assert by_key[("adam", 0)]["metric_value"] == 5.0 and by_key[("adam", 0)]["eta_s"] is None
    # One job running: its 60 s, the interrupted run's 90 steps and the stale run's 135 steps (0.5 s each).
    assert data["sweep_eta_s"] == pytest.approx(60 + 45 + 67.5)


def test_unstarted_jobs_join_the_sweep_eta(sweep):
    runs = sweep_status.collect(sweep)
    base = sweep_status.sweep_eta(runs)
    # Two more jobs of a measured run's length (180 steps x 0.5 s), still spread over the one running job.
    assert sweep_status.sweep_eta(runs, expect=8) == pytest.approx(base + 2 * 90)
    assert sweep_status.sweep_eta([r for r in runs if r.status != "running"]) is None  # nothing runs: no pace


def test_a_sweep_with_nothing_left_is_done(tmp_path):
    make_run(tmp_path, "adam", 0, "finished", epochs_done=4)
    make_run(tmp_path, "adam", 1, "failed", epochs_done=1, reason="loss became nan")
    runs = sweep_status.collect(tmp_path)
    assert "sweep ETA: done" in sweep_status.render(tmp_path, runs)
    assert "sweep ETA: -" in sweep_status.render(tmp_path, runs, expect=3)  # one job not started yet


def test_when_the_lock_holder_dies_the_run_turns_stale(tmp_path, lock_holder):
    path = make_run(tmp_path, "adam", 0, "running", epochs_done=1)
    proc = lock_holder(path)
    assert sweep_status.read_run(path).status == "running"
    proc.kill()
    proc.wait()
    assert sweep_status.read_run(path).status == "stale"


def test_without_a_lock_file_silence_decides(tmp_path):
    path = make_run(tmp_path, "adam", 0, "running", epochs_done=1)
    assert sweep_status.read_run(path).status == "running"
    assert sweep_status.read_run(path, now=time.time() + 2 * sweep_status.STALE_AFTER_S).status == "stale"


def test_a_run_that_only_wrote_its_config_is_starting(tmp_path, lock_holder):
    path = tmp_path / "default" / "digits_cnn" / "lion" / "seed3"
    path.mkdir(parents=True)
    config = {"experiment_name": "default", "seed": 3, "model": {"name": "digits_cnn"}}
    config |= {"optimizer": {"name": "lion"}, "trainer": {"epochs": 30}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lock_holder(path)
    run = sweep_status.read_run(path)
    assert (run.experiment, run.model, run.optimizer, run.seed, run.epochs) == (
        "default",
        "digits_cnn",
        "lion",
        3,
        30,
    )
    assert run.status == "starting"


def test_csv_tail_reads_only_the_end_and_skips_a_half_written_row(tmp_path):
    path = tmp_path / "train.csv"
    rows = "".join(f"{s},1,0.25,0.001,{s / 10:.3f}\n" for s in range(1, 5001))
    path.write_text("step,epoch,loss,lr,time\n" + rows + "5001,1,0.2")  # the writer is mid-row
    assert path.stat().st_size > sweep_status.TAIL_BYTES
    assert sweep_status.csv_tail(path) == {
        "step": "5000",
        "epoch": "1",
        "loss": "0.25",
        "lr": "0.001",
        "time": "500.000",
    }
    path.write_text("step,epoch,loss,lr,time\n1,1,0.5,0.001,0.1\n")
    assert sweep_status.csv_tail(path)["step"] == "1"  # a one-row file: the row right after the header counts
    path.write_text("step,epoch,loss,lr,time\n")
    assert sweep_status.csv_tail(path) is None


def test_watch_refreshes_until_ctrl_c(sweep, capsys, monkeypatch):
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_status.time, "sleep", fake_sleep)
    assert sweep_status.main([str(sweep), "--watch", "5"]) == 0
    out = capsys.readouterr().out
    assert sleeps == [5.0, 5.0] and out.count("6 runs under") == 2 and out.count("\033[H\033[J") == 2


def test_bad_arguments_are_one_sentence(tmp_path, capsys):
    assert sweep_status.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert sweep_status.main([str(tmp_path), "--watch", "0"]) == 2


def test_format_duration():
    f = sweep_status.format_duration
    assert [f(None), f(59.6), f(3599), f(3600), f(90061)] == ["-", "1m00s", "59m59s", "1h00m", "1d01h"]


def test_the_script_runs_from_the_command_line(sweep):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout (the venv's .pth may name another)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep_status.py"), str(sweep)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 runs under" in proc.stdout


def test_the_lock_the_trainer_holds_is_the_one_sweep_status_probes(tmp_path):
    """One name, one place: a run directory holding only the real RunLock's file is found, and a live run
    whose files are all older than the stale limit is running (a long epoch, nothing logged yet)."""
    assert sweep_status.LOCK_NAME is runlock.LOCK_NAME
    fresh = tmp_path / "exp" / "digits_cnn" / "adam" / "seed0"
    fresh.mkdir(parents=True)
    old = make_run(tmp_path, "adamx", 0, "running", epochs_done=1)
    with RunLock(fresh), RunLock(old):
        assert set(sweep_status.find_runs(tmp_path)) == {fresh, old}
        hours_ago = time.time() - 3 * sweep_status.STALE_AFTER_S
        for path in old.iterdir():
            os.utime(path, (hours_ago, hours_ago))
        assert sweep_status.read_run(old).status == "running"
        assert sweep_status.read_run(fresh).status == "starting"
    assert sweep_status.read_run(old).status == "stale"  # released, and silent for hours


def test_a_live_run_whose_lock_file_was_deleted_is_still_running(tmp_path):
    path = make_run(tmp_path, "adam", 0, "running", epochs_done=1)
    with RunLock(path):
        (path / LOCK_NAME).unlink()
        assert (
            sweep_status.read_run(path, now=time.time() + 3 * sweep_status.STALE_AFTER_S).status == "running"
        )


@pytest.mark.parametrize(
    "odd",
    [
        "[1, 2, 3]",
        '"finished"',
        "null",
        '{"status": "running", "seed": "3a"}',
        '{"status": "finished", "epochs_done": "two"}',
        '{"status": "finished", "steps": [1]}',
        '{"status": "finished", "final": "none"}',
    ],
)
def test_one_odd_summary_is_reported_unreadable_and_the_rest_printed(tmp_path, capsys, odd):
    make_run(tmp_path, "adam", 0, "finished", epochs_done=4)
    bad = make_run(tmp_path, "adamx", 0, "finished", epochs_done=4)
    (bad / "summary.json").write_text(odd)
    assert sweep_status.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 finished" in out
    if odd != "null":  # JSON null reads as "no summary yet": the config.yaml decides
        assert "1 unreadable" in out
        assert f"unreadable {bad}: summary.json or config.yaml holds unexpected values" in out


def test_json_is_indented_two_spaces_and_a_starting_run_is_at_step_0(tmp_path, capsys):
    path = tmp_path / "default" / "digits_cnn" / "lion" / "seed3"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"experiment_name": "default", "seed": 3}))
    assert sweep_status.main([str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out == json.dumps(data, indent=2) + "\n"
    assert '\n  "totals": {\n    "starting": 1\n  },\n' in out
    run = data["runs"][0]
    assert (run["status"], run["epochs_done"], run["step"], run["total_steps"]) == ("starting", 0, 0, None)


def test_a_run_in_its_first_epoch_before_steps_per_epoch_is_known(tmp_path, capsys):
    """summary.json says epochs_done 0 and no steps_per_epoch yet: epoch 0/4, no percentage, no ETA."""
    path = make_run(tmp_path, "adam", 0, "running", epochs_done=0, step=10, t=5.0)
    summary = json.loads((path / "summary.json").read_text())
    del summary["steps_per_epoch"]
    (path / "summary.json").write_text(json.dumps(summary))
    assert sweep_status.main([str(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " running " in line)
    assert row.split() == [
        "table3",
        "digits_cnn",
        "adam",
        "0",
        "running",
        "0/4",
        "top1_err",
        "5",
        "1234.5/s",
        "-",
    ]
    run = sweep_status.read_run(path)
    assert (run.epochs_done, run.step, run.total_steps, run.seconds_per_step) == (0, 10, None, 0.5)


def test_a_train_csv_behind_the_summary_does_not_move_the_step_back(tmp_path):
    """summary.json (epoch 2 done, 90 steps) is newer than train.csv's last flushed row (step 80): the
    summary's step stands, and no pace is taken from the lagging log."""
    path = make_run(tmp_path, "adam", 0, "running", epochs_done=2, step=80, t=40.0)
    run = sweep_status.read_run(path)
    assert (run.step, run.total_steps, run.seconds_per_step, run.eta_s) == (90, 180, None, None)


def test_finished_runs_pace_prices_a_running_job_not_measured_yet():
    """A running job without a measured pace counts with the mean duration of the runs measured so far."""
    done = sweep_status.RunStatus(path="a", status="finished", seconds_per_step=0.5, total_steps=100)
    fresh = sweep_status.RunStatus(path="b", status="running")
    assert sweep_status.sweep_eta([done, fresh]) == pytest.approx(50.0)
    assert sweep_status.sweep_eta([sweep_status.RunStatus(path="a", status="finished"), fresh]) is None
