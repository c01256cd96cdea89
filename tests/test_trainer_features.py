"""Trainer switches: SophiaG's Hessian refresh, mixed precision, clipping, channels_last, compile,
deterministic mode, evaluation cadence and the per-step LR."""

import functools

import pandas as pd
import pytest
import torch
from helpers import cifar_fixture_overrides, compose_config, tiny_trainer

import adamx
from experiments.launch import run_experiment
from experiments.rundir import load_checkpoint, run_dir
from experiments.schedule import linear_to_min
from experiments.trainer import TrainerConfig


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


def test_compile_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    try:
        summary, path = run(tmp_path, "trainer.compile=true", "trainer.deterministic=true")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    keys = load_checkpoint(path / "last.pt")["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # checkpoints hold the plain model's names


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
