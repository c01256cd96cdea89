"""Interrupted runs resume exactly: train.csv, eval.csv and final weights equal an uninterrupted run's."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import compose_config

from experiments.launch import run_experiment
from experiments.rundir import load_checkpoint, read_json, run_dir
from experiments.trainer import Hooks, Trainer


def make_cfg(root, *extra):
    # 360 training images (12 steps per epoch, the last batch partial), dropout on: RNG state matters.
    overrides = [
        f"runs_root={root}",
        "trainer.epochs=3",
        "trainer.progress=false",
        "trainer.log_every=5",
        "dataset.test_size=1437",
        "model.dropout=0.2",
        *extra,
    ]
    return compose_config(overrides), overrides


def stop_after_epoch(n):
    def hook(trainer, epoch):
        if epoch == n:
            raise KeyboardInterrupt

    return Hooks(on_epoch_end=hook)


def assert_same_run(a: Path, b: Path):
    train_a, train_b = pd.read_csv(a / "train.csv"), pd.read_csv(b / "train.csv")
    assert len(train_a) == 36
    pd.testing.assert_frame_equal(
        train_a.drop(columns="time"), train_b.drop(columns="time"), check_exact=True
    )
    eval_a, eval_b = pd.read_csv(a / "eval.csv"), pd.read_csv(b / "eval.csv")
    pd.testing.assert_frame_equal(eval_a.drop(columns="time"), eval_b.drop(columns="time"), check_exact=True)
    ck_a, ck_b = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ck_a["step"] == ck_b["step"] == 36
    for key in ck_a["model"]:
        assert torch.equal(ck_a["model"][key], ck_b["model"][key]), key
    for sa, sb in zip(ck_a["optimizer"]["state"].values(), ck_b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert read_json(a / "summary.json")["best"] == read_json(b / "summary.json")["best"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg, overrides = make_cfg(tmp_path_factory.mktemp("straight"))
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and summary["steps"] == 36
    return run_dir(cfg)


def test_resume_after_epoch_1_of_3_equals_uninterrupted(tmp_path, reference):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    path = run_dir(cfg)
    summary = read_json(path / "summary.json")
    assert summary["status"] == "interrupted" and "re-run" in summary["reason"]
    assert load_checkpoint(path / "last.pt")["epoch"] == 1
    assert len(pd.read_csv(path / "train.csv")) == 12
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)


def test_resume_after_a_stop_mid_epoch_drops_the_rows_past_last_pt(tmp_path, reference, monkeypatch):
    cfg, overrides = make_cfg(tmp_path)
    original = Trainer._optimizer_step

    def step_then_stop(self, samples):
        original(self, samples)
        if self.step == 18:  # epoch 2, step 19 of 36 in flight
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_optimizer_step", step_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides)
    monkeypatch.undo()
    path = run_dir(cfg)
    assert len(pd.read_csv(path / "train.csv")) == 12  # rows past last.pt were written, then dropped ...
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)  # ... and trained again on resume


def test_finished_run_is_skipped_and_force_restarts(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    first = run_experiment(cfg, overrides)
    again = run_experiment(cfg, overrides)
    assert again["skipped"] and again["status"] == "finished" and again["started"] == first["started"]
    cfg.force = True
    forced = run_experiment(cfg, overrides)
    assert not forced.get("skipped") and forced["status"] == "finished"
    assert len(pd.read_csv(run_dir(cfg) / "train.csv")) == 12  # restarted, not appended


def test_resuming_with_a_different_config_is_refused(tmp_path):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    changed, overrides = make_cfg(tmp_path, "optimizer.lr=0.005")
    with pytest.raises(ValueError, match=r"optimizer\.lr: 0\.001 -> 0\.005.*force=true"):
        run_experiment(changed, overrides)


def test_a_finished_run_with_another_config_is_not_mistaken_for_this_one(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    run_experiment(cfg, overrides)
    other, overrides = make_cfg(tmp_path, "trainer.epochs=1", "optimizer.lr=0.002")
    with pytest.raises(
        ValueError, match=r"optimizer\.lr: 0\.001 -> 0\.002.*experiment_name=lr_\$\{optimizer\.lr\}"
    ):
        run_experiment(other, overrides)
