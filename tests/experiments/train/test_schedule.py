"""The LR schedules: Eq. 15 (without its typo) and constant, and their defaults.

Eq. 15 (linear from peak to min over t1 steps, then flat) at exact steps, its defaults at their
boundaries, and the step at which the trainer applies each value (schedule step = optimizer steps done)."""

import os
import signal

import pandas as pd
import pytest
import torch

from experiments.tasks import build_task
from experiments.train.loaders import train_loader
from experiments.train.schedule import build_lr_factor, constant, linear_to_min
from experiments.train.trainer import Hooks, RunInterrupted, Trainer, TrainerConfig

# ---------------------------------------------------------------- from test_schedule.py: The LR schedules: Eq. 15 (without its typo) and constant, and their defaults.


def test_linear_to_min_endpoints_and_midpoint():
    assert linear_to_min(0, 1e-3, 1e-5, 100) == pytest.approx(1e-3)
    assert linear_to_min(50, 1e-3, 1e-5, 100) == pytest.approx((1e-3 + 1e-5) / 2)
    assert linear_to_min(100, 1e-3, 1e-5, 100) == pytest.approx(1e-5)
    assert linear_to_min(101, 1e-3, 1e-5, 100) == 1e-5
    assert linear_to_min(10**6, 1e-3, 1e-5, 100) == 1e-5


def test_paper_cifar_numbers():
    # Table 3: peak 3e-3, min 3e-5, t1 = 37,488 of 62,480 steps (0.6 x T).
    factor = build_lr_factor("linear_to_min", peak=3e-3, total_steps=62_480, min_lr=3e-5)
    assert factor(37_488) * 3e-3 == pytest.approx(3e-5)
    assert factor(37_487) * 3e-3 > 3e-5
    assert factor(62_479) * 3e-3 == pytest.approx(3e-5)


def test_defaults_min_is_peak_over_100_and_t1_is_sixty_percent():
    factor = build_lr_factor("linear_to_min", peak=0.01, total_steps=1000)
    assert factor(0) == 1.0
    assert factor(600) == pytest.approx(0.01)
    assert factor(300) == pytest.approx((1 + 0.01) / 2)
    explicit = build_lr_factor("linear_to_min", peak=0.01, total_steps=1000, t1=200, min_lr=1e-3)
    assert explicit(200) == pytest.approx(0.1) and explicit(100) == pytest.approx(0.55)


def test_constant():
    assert constant(12345, 2.2e-5) == 2.2e-5
    assert build_lr_factor("constant", peak=2.2e-5, total_steps=10)(7) == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cosine"}, "Unknown schedule 'cosine'"),
        ({"name": "linear_to_min", "t1": 0}, "schedule.t1"),
        ({"name": "linear_to_min", "t1_fraction": 1.5}, "t1_fraction"),
        ({"name": "constant", "peak": 0.0}, "optimizer.lr=0.0"),
    ],
)
def test_bad_settings_name_the_value(kwargs, match):
    args = {"peak": 1e-3, "total_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_lr_factor(**args)


# ---------------------------------------------------------------- from test_schedule_exact.py: Eq. 15 (linear from peak to min over t1 steps, then flat) at exact steps, its de


# peak 1, min 0.01, t1 = 4: lr(t) = 1 - 0.99 t / 4 for t <= 4, then 0.01 (hand values below).
EXACT = [(0, 1.0), (1, 0.7525), (2, 0.505), (3, 0.2575), (4, 0.01), (5, 0.01), (9, 0.01), (10, 0.01)]


@pytest.mark.parametrize("step, value", EXACT)
def test_linear_to_min_at_each_named_step(step, value):
    """Catches an off-by-one in t/t1 (t+1, t1-1), a '<' for '<=' at t1, or min/peak swapped."""
    assert linear_to_min(step, 1.0, 0.01, 4) == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_linear_to_min_with_min_above_zero_and_large_peak():
    """Catches a schedule that ignores ``minimum`` on the ramp (e.g. peak * (1 - t / t1))."""
    # peak 3, min 1, t1 = 8: lr(2) = 3 - 2 * 2 / 8 = 2.5; lr(6) = 3 - 2 * 6 / 8 = 1.5
    assert linear_to_min(2, 3.0, 1.0, 8) == pytest.approx(2.5, rel=1e-12)
    assert linear_to_min(6, 3.0, 1.0, 8) == pytest.approx(1.5, rel=1e-12)
    assert linear_to_min(7, 3.0, 1.0, 8) == pytest.approx(1.25, rel=1e-12)  # 3 - 2 * 7 / 8
    assert linear_to_min(8, 3.0, 1.0, 8) == 1.0 and linear_to_min(9, 3.0, 1.0, 8) == 1.0


@pytest.mark.parametrize(
    "total, t1",
    [(10, 6), (7, 4), (9, 5), (1, 1), (2, 1), (100, 60)],  # round(0.6 T): 6, 4.2, 5.4, 0.6 -> max(1, .), 1.2
)
def test_default_t1_is_sixty_percent_of_total_rounded(total, t1):
    """Catches t1 from a floor/ceil, from 0.6 * (T - 1), or a missing max(1, .) for tiny runs."""
    factor = build_lr_factor("linear_to_min", peak=2.0, total_steps=total)
    assert factor(t1) == pytest.approx(0.01, rel=1e-12)  # min = peak / 100 reached exactly at t1 ...
    if t1 > 1:
        # ... and not one step earlier: factor(t1 - 1) = 1 - 0.99 (t1 - 1) / t1
        assert factor(t1 - 1) == pytest.approx(1 - 0.99 * (t1 - 1) / t1, rel=1e-12)
    assert factor(total - 1) == pytest.approx(0.01 if total - 1 >= t1 else 1 - 0.99 * (total - 1) / t1)
    assert factor(total) == pytest.approx(0.01, rel=1e-12)


def test_t1_fraction_one_is_allowed_and_reaches_min_at_the_last_step():
    """Catches '< 1' for '<= 1' in the t1_fraction check, and t1_fraction being ignored."""
    factor = build_lr_factor("linear_to_min", peak=1.0, total_steps=10, t1_fraction=1.0)
    assert factor(5) == pytest.approx(1 - 0.99 * 5 / 10, rel=1e-12)
    assert factor(10) == pytest.approx(0.01, rel=1e-12)
    half = build_lr_factor("linear_to_min", peak=1.0, total_steps=10, t1_fraction=0.3)  # t1 = 3
    assert half(3) == pytest.approx(0.01, rel=1e-12) and half(2) == pytest.approx(0.34, rel=1e-12)
    for bad in (0.0, -0.1, 1.0000001):
        with pytest.raises(ValueError, match="t1_fraction"):
            build_lr_factor("linear_to_min", peak=1.0, total_steps=10, t1_fraction=bad)


def test_explicit_zero_min_lr_is_zero_not_the_default():
    """Catches ``if not min_lr`` (0.0 falling back to peak / 100) and an explicit t1 being ignored."""
    factor = build_lr_factor("linear_to_min", peak=0.5, total_steps=100, min_lr=0.0, t1=10)
    assert factor(10) == 0.0 and factor(50) == 0.0
    assert factor(5) == pytest.approx(0.5, rel=1e-12)  # half way to zero
    assert factor(1) == pytest.approx(0.9, rel=1e-12)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the LR in force at every step() call (what the update actually uses)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.used = []

    def step(self, closure=None):
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


def _trainer(tmp_path, hooks=None):
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,)))
    model = torch.nn.Linear(4, 3)
    task = build_task("classification", num_classes=3)
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        task=task,
        model=model,
        optimizer=optimizer,
        train_data=train_loader(data, task.collate, 4, seed=0),  # 4 steps per epoch
        eval_data=[(torch.randn(4, 4, generator=gen), torch.randint(0, 3, (4,)))],
        lr_factor=build_lr_factor("linear_to_min", peak=0.1, total_steps=8),  # t1 = round(4.8) = 5
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", progress=False, epochs=2, log_every=1),
        hooks=hooks,
    )
    return trainer, optimizer


# The LR of optimizer step k (1-based) is lr(k - 1): 0.1 - 0.099 (k - 1) / 5, then 0.001 from k = 6.
APPLIED = [0.1, 0.0802, 0.0604, 0.0406, 0.0208, 0.001, 0.001, 0.001]


def test_trainer_applies_lr_of_steps_done_before_each_update(tmp_path):
    """Catches the LR being set after the update (or from step + 1): step 1 must run at the peak."""
    trainer, optimizer = _trainer(tmp_path)
    trainer.fit()
    assert optimizer.used == pytest.approx(APPLIED, rel=1e-12)
    train = pd.read_csv(tmp_path / "train.csv")
    assert train.step.tolist() == list(range(1, 9))
    assert train.lr.tolist() == pytest.approx(APPLIED, rel=1e-12)  # the log shows the LR the step used


def test_resumed_run_continues_the_schedule_at_the_saved_step(tmp_path):
    """Catches a resume that restarts the schedule (lr(0) again) or shifts it by the batches skipped."""
    stop = Hooks(on_step_end=lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == 3 else None)
    trainer, first = _trainer(tmp_path, hooks=stop)
    with pytest.raises(RunInterrupted):
        trainer.fit()
    assert first.used == pytest.approx(APPLIED[:3], rel=1e-12)
    trainer, second = _trainer(tmp_path)
    trainer.fit()
    assert second.used == pytest.approx(APPLIED[3:], rel=1e-12)
    train = pd.read_csv(tmp_path / "train.csv")
    assert train.step.tolist() == list(range(1, 9))
    assert train.lr.tolist() == pytest.approx(APPLIED, rel=1e-12)


class RecordingHessianSGD(RecordingSGD):
    """SGD with SophiaG's ``update_hessian`` hook, recording after how many optimizer steps it runs."""

    def __init__(self, params, lr):
        super().__init__(params, lr)
        self.refreshed_after = []

    def update_hessian(self):
        self.refreshed_after.append(len(self.used))


def test_hessian_refreshes_after_exactly_every_kth_global_step(tmp_path):
    """Catches a refresh schedule shifted by one (after steps 1, 4, 7 instead of 3, 6, 9: the same count)
    or counted per epoch instead of over the run."""
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.randint(0, 3, (10,)))
    model = torch.nn.Linear(4, 3)
    task = build_task("classification", num_classes=3)
    optimizer = RecordingHessianSGD(model.parameters(), lr=0.1)
    Trainer(
        task=task,
        model=model,
        optimizer=optimizer,
        train_data=train_loader(data, task.collate, 2, seed=0),  # 5 steps per epoch, 10 in all
        eval_data=[(torch.randn(2, 4), torch.randint(0, 3, (2,)))],
        lr_factor=lambda step: 1.0,
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", progress=False, epochs=2),
        hessian_interval=3,
    ).fit()
    assert optimizer.refreshed_after == [3, 6, 9]
