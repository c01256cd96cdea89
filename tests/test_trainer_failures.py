"""Failures a user meets: a non-finite loss, a missing data set, Ctrl-C; each says what happened and what to do."""

import pytest
import torch
from helpers import compose_config

import data
from data import DatasetNotFoundError
from experiments.launch import run_experiment
from experiments.rundir import load_checkpoint, read_json, run_dir
from experiments.trainer import Hooks, TrainingFailed


def make_cfg(root, *extra):
    overrides = [
        f"runs_root={root}",
        "trainer.epochs=3",
        "trainer.progress=false",
        "trainer.log_every=4",
        "dataset.test_size=1437",
        *extra,
    ]
    return compose_config(overrides), overrides


def poison_after_epoch(n):
    def hook(trainer, epoch):
        if epoch == n:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    return Hooks(on_epoch_end=hook)


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(TrainingFailed, match=r"loss became nan at step 13 \(epoch 2\)") as info:
        run_experiment(cfg, overrides, hooks=poison_after_epoch(1))
    assert "\n" not in str(info.value) and "last.pt" in str(info.value)
    path = run_dir(cfg)
    summary = read_json(path / "summary.json")
    assert summary["status"] == "failed" and summary["reason"] == str(info.value)
    assert summary["epochs_done"] == 1 and summary["steps"] == 12
    checkpoint = load_checkpoint(path / "last.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == 12
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert (path / "best.pt").exists()
    # Re-running a failed run does not silently train again; force=true does.
    again = run_experiment(cfg, overrides)
    assert again["skipped"] and again["status"] == "failed"
    cfg.force = True
    assert run_experiment(cfg, overrides)["status"] == "finished"


def test_missing_dataset_exit_code_and_message(tmp_path, monkeypatch, capsys):
    def build(root=None, **_):
        raise DatasetNotFoundError(
            f"No data under {root}; pass dataset.download=true or put the files there."
        )

    import types

    module = types.ModuleType("fake_missing_data")
    module.build = build
    monkeypatch.setitem(__import__("sys").modules, "fake_missing_data", module)
    monkeypatch.setitem(data.DATASETS, "fake_missing", "fake_missing_data:build")
    cfg, overrides = make_cfg(tmp_path, "dataset.name=fake_missing", f"dataset.root={tmp_path / 'nowhere'}")
    import run

    assert run.execute(cfg, overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "dataset.download=true" in err


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    import run
    from experiments import launch

    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=2")
    real = launch.run_experiment
    monkeypatch.setattr(
        launch, "run_experiment", lambda c, o: real(c, o, hooks=Hooks(on_epoch_end=_interrupt_at_1))
    )
    assert run.execute(cfg, overrides) == 130
    assert "re-run the same command" in capsys.readouterr().err
    monkeypatch.undo()
    assert run.execute(cfg, overrides) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "top1_err" in out
    assert read_json(run_dir(cfg) / "summary.json")["status"] == "finished"


def _interrupt_at_1(trainer, epoch):
    if epoch == 1:
        raise KeyboardInterrupt
