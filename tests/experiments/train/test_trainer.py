"""The trainer's defaults, value by value: TrainerConfig mirrors configs/trainer/default.yaml (a wrong
default in either would change every run that does not set it), and a run without a seed uses seed 0.

Trainer switches: SophiaG's Hessian refresh, mixed precision, clipping, channels_last, compile,
deterministic mode, evaluation cadence and the per-step LR.

Failures a user meets: a non-finite loss, a missing data set, Ctrl-C; each says what happened and what to do."""

from __future__ import annotations

import functools
from dataclasses import MISSING, fields

import pandas as pd
import pytest
import torch
import yaml

import adamx
import data
from data import DatasetNotFoundError
from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train.files import load_checkpoint, read_json
from experiments.train.schedule import linear_to_min
from experiments.train.trainer import Hooks, TrainerConfig, TrainingFailed
from tests.helpers import ROOT, cifar_fixture_overrides, compose_config, tiny_trainer

# ---------------------------------------------------------------- from test_trainer_defaults.py: The trainer's defaults, value by value: TrainerConfig mirrors configs/trainer/de


def test_trainer_config_defaults_mirror_the_yaml():
    """Every field has the yaml's default, except epochs (each model/experiment file sets its own)."""
    configured = yaml.safe_load((ROOT / "configs" / "trainer" / "default.yaml").read_text())
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainerConfig)
    }
    assert set(defaults) == set(configured)
    assert configured.pop("epochs") == 80 and defaults.pop("epochs") == 1
    assert defaults == configured


def test_the_seed_comes_from_the_argument_then_the_run_info_then_zero(tmp_path):
    assert tiny_trainer(tmp_path, seed=7, info={"seed": 3}).seed == 7
    assert tiny_trainer(tmp_path, info={"seed": 3}).seed == 3
    assert tiny_trainer(tmp_path).seed == 0


# ---------------------------------------------------------------- from test_trainer_features.py: Trainer switches: SophiaG's Hessian refresh, mixed precision, clipping, channels


def run(root, *extra, digits=True):
    # digits: 360 training images, 12 steps per epoch
    overrides = [f"runs_root={root}", "trainer.epochs=1", "trainer.progress=false", *extra]
    overrides += ["dataset.test_size=1437"] if digits else []
    cfg = compose_config(overrides)
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished", summary.get("reason")
    return summary, run_dir(cfg)


def test_sophiag_refreshes_the_hessian_every_k_steps_with_the_batch_factor(tmp_path, monkeypatch):
    calls = {"hessian": [], "bs": []}
    update, step = adamx.SophiaG.update_hessian, adamx.SophiaG.step

    def spy_update(self):
        calls["hessian"].append(sum(p.grad is not None for g in self.param_groups for p in g["params"]))
        return update(self)

    def spy_step(self, closure=None, bs=None):
        calls["bs"].append(bs)
        return step(self, closure, bs=bs)

    monkeypatch.setattr(adamx.SophiaG, "update_hessian", spy_update)
    monkeypatch.setattr(adamx.SophiaG, "step", spy_step)
    summary, _ = run(tmp_path, "optimizer=sophiag", "optimizer.hessian_update_interval=3")
    assert summary["steps"] == 12
    assert len(calls["hessian"]) == 4 and all(n > 0 for n in calls["hessian"])  # after steps 3, 6, 9, 12
    assert calls["bs"] == [32] * 11 + [360 - 11 * 32]  # the samples in each step's mean loss


def test_hessian_interval_on_an_optimizer_without_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no update_hessian"):
        run(tmp_path, "optimizer=adamx", "+optimizer.hessian_update_interval=2")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.heavy
def test_mixed_precision_on_cpu(tmp_path, precision):
    summary, path = run(
        tmp_path, f"trainer.precision={precision}", "trainer.channels_last=true", "trainer.grad_clip=1.0"
    )
    assert summary["precision"] == precision
    assert summary["final"]["metrics"]["top1_err"] < 80
    checkpoint = load_checkpoint(path / "last.pt")
    assert bool(checkpoint["scaler"]) == (precision == "fp16")
    assert all(t.dtype != torch.float16 for t in checkpoint["model"].values())  # weights stay fp32


def test_grad_clip_bounds_the_update(tmp_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        clip(params, max_norm, *args, **kwargs)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return torch.tensor(0.0)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run(tmp_path, "trainer.grad_clip=0.05")
    assert len(norms) == 12 and max(norms) <= 0.05 * (1 + 1e-5)


@pytest.mark.heavy
def test_compile_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    try:
        summary, path = run(tmp_path, "trainer.compile=true", "trainer.deterministic=true")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    keys = load_checkpoint(path / "last.pt")["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # checkpoints hold the plain model's names


@pytest.mark.heavy
def test_eval_cadence_and_the_lr_of_every_step(tmp_path):
    _, path = run(tmp_path, "trainer.epochs=3", "trainer.eval_every=2", "schedule.min_lr=1e-5")
    assert pd.read_csv(path / "eval.csv").epoch.tolist() == [2, 3]  # every 2nd, and always the last
    train = pd.read_csv(path / "train.csv")
    t1 = round(0.6 * 36)
    expected = [linear_to_min(s - 1, 1e-3, 1e-5, t1) for s in train.step]
    assert train.lr.tolist() == pytest.approx(expected, rel=1e-12)


def test_schedule_scales_each_groups_own_lr(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 1.0}, {"params": model[1].parameters(), "lr": 0.1}]
    )
    trainer = tiny_trainer(
        tmp_path, model, optimizer, samples=16, batch_size=8, lr_factor=lambda step: 0.5**step
    )
    trainer.step = 3
    trainer._set_lr()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.125, 0.0125])


def test_bad_trainer_settings_name_the_value():
    with pytest.raises(ValueError, match="trainer.precision='fp8'"):
        TrainerConfig(precision="fp8")
    with pytest.raises(ValueError, match="grad_clip"):
        TrainerConfig(grad_clip=-1.0)


@pytest.mark.heavy
def test_device_resident_loader_is_used_and_replays_the_same_epoch(tmp_path):
    from data.fixtures import write_fixture

    root = write_fixture("cifar100", tmp_path / "cifar")
    common = [*cifar_fixture_overrides(root), "trainer.log_every=50"]
    resident, path_a = run(tmp_path / "a", *common, "dataset.device_resident=true", digits=False)
    again, path_b = run(tmp_path / "b", *common, "dataset.device_resident=true", digits=False)
    assert resident["dataset"] == "cifar100" and resident["steps"] > 0
    pd.testing.assert_series_equal(
        pd.read_csv(path_a / "train.csv").loss, pd.read_csv(path_b / "train.csv").loss
    )
    with pytest.raises(ValueError, match="offers no device-resident loader"):
        run(tmp_path / "c", "dataset.device_resident=true")  # digits has none


# ---------------------------------------------------------------- from test_trainer_failures.py: Failures a user meets: a non-finite loss, a missing data set, Ctrl-C; each says


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


@pytest.mark.heavy
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


@pytest.mark.heavy
def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    import run
    from experiments.runs import launch

    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=2")
    real = launch.run_experiment
    monkeypatch.setattr(
        launch,
        "run_experiment",
        lambda c, o, hooks=None: real(c, o, hooks=Hooks(on_epoch_end=_interrupt_at_1)),
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
