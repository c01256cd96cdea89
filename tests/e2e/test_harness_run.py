"""The command line as a newcomer meets it: the demo end to end, a finished run skipped, a sweep with
Hydra's basic launcher, and an unknown option answered with the list of options."""

import json

import pandas as pd
import pytest

from tests.helpers import run_py


@pytest.mark.slow
def test_demo_end_to_end_then_skipped(tmp_path):
    proc = run_py(f"runs_root={tmp_path}", "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / "default" / "digits_cnn" / "adamx" / "seed0"
    assert f"run directory: {path}" in proc.stdout
    assert "status: finished" in proc.stdout and "top1_err" in proc.stdout and "top5_err" in proc.stdout
    for name in ("config.yaml", "train.csv", "eval.csv", "summary.json", "last.pt", "best.pt"):
        assert (path / name).is_file(), name
    train = pd.read_csv(path / "train.csv")
    assert list(train.columns) == ["step", "epoch", "loss", "lr", "time"]
    assert len(train) == 2 * 45 and train.step.tolist() == list(range(1, 91))
    assert train.lr.iloc[0] == pytest.approx(1e-3) and train.lr.is_monotonic_decreasing
    assert train.loss.iloc[-10:].mean() < train.loss.iloc[:10].mean() / 3  # it learns
    evals = pd.read_csv(path / "eval.csv")
    assert evals.epoch.tolist() == [1, 2] and {"top1_err", "top5_err"} <= set(evals.columns)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final"]["epoch"] == 2
    assert summary["final"]["metrics"]["top1_err"] < 20  # 10 classes: chance is 90 % error
    assert summary["best"]["top1_err"]["value"] == evals.top1_err.min()
    assert summary["throughput_samples_per_s"] > 0 and summary["versions"]["torch"]

    again = run_py(f"runs_root={tmp_path}", "trainer.epochs=2")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert len(pd.read_csv(path / "train.csv")) == 90


@pytest.mark.slow
def test_multirun_sweep_with_the_basic_launcher(tmp_path):
    proc = run_py(
        "-m",
        "optimizer=adam,adam_adax",
        "seed=0,1",
        f"runs_root={tmp_path}",
        "trainer.epochs=1",
        "dataset.test_size=1437",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for opt in ("adam", "adam_adax"):
        for seed in (0, 1):
            path = tmp_path / "default" / "digits_cnn" / opt / f"seed{seed}"
            assert json.loads((path / "summary.json").read_text())["status"] == "finished", path
    losses = {
        seed: pd.read_csv(tmp_path / f"default/digits_cnn/adam/seed{seed}/train.csv").loss for seed in (0, 1)
    }
    assert not losses[0].equals(losses[1])  # seeds differ


@pytest.mark.slow
def test_unknown_option_is_refused_with_the_list_of_options(tmp_path):
    proc = run_py("optimizer=adamw", f"runs_root={tmp_path}")
    assert proc.returncode != 0
    assert "optimizer/adamw" in proc.stderr and "Available options" in proc.stderr
    assert "adamx" in proc.stderr and "sophiag" in proc.stderr
    assert not any(tmp_path.iterdir())
