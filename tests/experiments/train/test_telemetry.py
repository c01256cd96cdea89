"""experiments/train/telemetry.py: the statistics of optim.csv, called directly (issue 25)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adamx import AdamX, register_beta2_schedule, schedules
from adamx.param_groups import decay_param_groups
from adamx.registry import OPTIMIZERS, create_optimizer
from experiments.train.telemetry import OPTIM_COLUMNS, OptimTelemetry

# beta2 = 1 after the first step: v_1 = g_1^2 and then never changes (a planted frozen second moment)
register_beta2_schedule("frozen_after_1", lambda t, b2: 0.0 * b2 if t <= 1 else b2)


def problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(64, 6)
    y = x @ torch.randn(6, 1) + 0.1 * torch.randn(64, 1)
    return model, x, y


def train(model, optimizer, x, y, steps: int, telemetry: OptimTelemetry | None = None, grads=None):
    rows = []
    for t in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = (model(x) - y).square().mean()
        loss.backward()
        if grads is not None:
            grads.append([p.grad.clone() for p in model.parameters()])
        if telemetry is not None and telemetry.due(t):
            telemetry.snapshot()
        optimizer.step()
        if telemetry is not None and telemetry.due(t):
            rows += telemetry.collect(t)
    return rows


def f(row: dict, key: str) -> float:
    return math.nan if row[key] == "" else float(row[key])


def test_a_frozen_v_shows_as_beta2_hat_1_and_a_constant_sqrt_v() -> None:
    model, x, y = problem()
    grads: list[list[torch.Tensor]] = []
    opt = AdamX(
        model.parameters(), lr=1e-2, betas=(0.9, 1.0), beta2_schedule="frozen_after_1", weight_decay=0.1
    )
    rows = train(model, opt, x, y, 30, OptimTelemetry(opt, every=10), grads)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(f(r, "beta2_hat") == 1.0 for r in rows)
    # sqrt(v) is |g_1| forever: its median is the median of the first step's |gradient|
    first = torch.cat([g.reshape(-1) for g in grads[0]]).abs()
    want = torch.quantile(first, torch.tensor([0.1, 0.5, 0.9])).tolist()
    for r in rows:
        assert [f(r, "sqrt_v_q10"), f(r, "sqrt_v_q50"), f(r, "sqrt_v_q90")] == pytest.approx(want, rel=1e-6)
    # the gradients shrink while v stays: |m_hat| falls against a frozen sqrt(v)
    assert f(rows[-1], "m_abs_q50") < f(rows[0], "m_abs_q50")
    # the same run with AdamX's own schedule: v tracks the gradients and its median moves
    model, x, y = problem()
    opt = AdamX(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    live = train(model, opt, x, y, 30, OptimTelemetry(opt, every=10))
    assert f(live[0], "beta2_hat") < 1.0
    assert f(live[0], "sqrt_v_q50") != pytest.approx(f(live[-1], "sqrt_v_q50"), rel=1e-3)


def test_update_statistics_by_hand_for_adamx() -> None:
    model, x, y = problem(1)
    lr, wd, eps = 3e-3, 0.05, 1e-8
    opt = AdamX(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=eps, weight_decay=wd)
    train(model, opt, x, y, 4)
    tel = OptimTelemetry(opt, every=1, step_eps=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    (model(x) - y).square().mean().backward()
    tel.snapshot()
    opt.step()
    (row,) = tel.collect(5)
    assert (
        set(row) == set(OPTIM_COLUMNS) and row["optimizer"] == "AdamX" and row["numel"] == 6 * 8 + 8 + 8 + 1
    )
    theta0 = torch.cat([b.reshape(-1) for b in before]).double()
    update = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)]).double()
    decay = lr * wd * theta0
    rest = update + decay
    rms = lambda v: float(v.square().mean().sqrt())  # noqa: E731
    assert f(row, "update_rms_over_lr") == pytest.approx(rms(update) / lr, rel=1e-6)
    assert f(row, "update_rms_over_weight_rms") == pytest.approx(rms(update) / rms(theta0), rel=1e-6)
    assert f(row, "decay_share") == pytest.approx(rms(decay) / (rms(decay) + rms(rest)), rel=1e-5)
    assert f(row, "frac_step_below_eps") == pytest.approx(float((rest.abs() < 0.9 * lr).double().mean()))
    assert 0.0 < f(row, "frac_step_below_eps") < 1.0  # the stated epsilon splits the coordinates here
    # m_hat is Algorithm 1's m_t = exp_avg / (1 - beta1^5); the step is lr m_hat/(sqrt(v)+eps) per coordinate
    m_hat = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()]) / (1 - 0.9**5)
    v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
    assert f(row, "m_abs_q50") == pytest.approx(float(m_hat.abs().median()), rel=1e-6)
    ratio = (m_hat.abs() / (v.sqrt() + eps)).double()
    assert f(row, "ratio_q50") == pytest.approx(float(torch.quantile(ratio, 0.5)), rel=1e-5)
    assert f(row, "beta1_hat") == pytest.approx((0.9 - 0.9**5) / (1 - 0.9**5))
    assert torch.allclose(-rest, lr * m_hat.double() / (v.double().sqrt() + eps), rtol=1e-4, atol=1e-9)


NO_SECOND_MOMENT = {"sgd", "lion", "sophiag"}
# beta2_hat at t = 3 with each name's default parameter, from adamx.schedules (AdaX: 1 - its lerp weight)
BETA2_HAT_AT_3 = {
    "adamx": schedules.beta2_hat_adamx(3, 0.99),
    "adam+adamx": schedules.beta2_hat_adamx(3, 0.99),
    "adam": schedules.beta2_hat_adam(3, 0.999),
    "radam": schedules.beta2_hat_adam(3, 0.999),
    "adam+adafactor": schedules.beta2_hat_adafactor(3, 0.8),
    "adam+adax": schedules.beta2_hat_adax(3, 1e-4),
    "adax": 1.0 - 1e-4 / math.expm1(3 * math.log1p(1e-4)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_registry_optimizer_gives_rows_with_blanks_where_nothing_applies(name: str) -> None:
    model, x, y = problem(2)
    groups = decay_param_groups(model, 0.01)  # two groups: decayed weights, undecayed biases
    opt = create_optimizer(name, groups, lr=1e-3)
    rows = train(model, opt, x, y, 6, OptimTelemetry(opt, every=3))
    assert [(r["step"], r["group"]) for r in rows] == [(3, 0), (3, 1), (6, 0), (6, 1)]
    for r in rows:
        assert list(r) == OPTIM_COLUMNS
        assert (
            f(r, "update_rms_over_lr") > 0 and f(r, "m_abs_q50") > 0 and 0 <= f(r, "frac_step_below_eps") <= 1
        )
        if name in NO_SECOND_MOMENT:
            assert r["sqrt_v_q50"] == r["ratio_q50"] == r["beta2_hat"] == ""
        else:
            assert f(r, "sqrt_v_q50") > 0 and 0 < f(r, "beta2_hat") <= 1
            if r["step"] == 3:
                assert f(r, "beta2_hat") == pytest.approx(BETA2_HAT_AT_3[name], rel=1e-12)
        if name == "sgd":  # coupled L2: the decay is inside the momentum, not separable
            assert r["decay_share"] == ""
        else:
            assert 0 <= f(r, "decay_share") <= 1
    undecayed = [r for r in rows if r["group"] == 1]
    if name != "sgd":
        assert all(f(r, "decay_share") == 0.0 for r in undecayed)


def test_telemetry_changes_nothing_and_needs_its_snapshot() -> None:
    model_a, x, y = problem(3)
    model_b, _, _ = problem(3)
    opt_a = AdamX(model_a.parameters(), lr=1e-2)
    opt_b = AdamX(model_b.parameters(), lr=1e-2)
    train(model_a, opt_a, x, y, 7, OptimTelemetry(opt_a, every=2))
    train(model_b, opt_b, x, y, 7)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
    tel = OptimTelemetry(opt_a, every=2)
    with pytest.raises(RuntimeError, match="snapshot"):
        tel.collect(8)
    with pytest.raises(ValueError, match="optim_stats_every=0"):
        OptimTelemetry(opt_a, every=0)


def test_large_groups_use_an_even_stride_for_quantiles() -> None:
    model, x, y = problem(4)
    opt = AdamX(model.parameters(), lr=1e-2)
    rows = train(model, opt, x, y, 2, OptimTelemetry(opt, every=1, max_quantile_elems=10))
    assert all(int(r["quantile_sample"]) <= 10 for r in rows)
    rows = train(model, opt, x, y, 1, OptimTelemetry(opt, every=1))
    assert int(rows[0]["quantile_sample"]) == rows[0]["numel"]


def test_a_parameter_without_gradient_leaves_the_rows_whole() -> None:
    model, x, y = problem(5)
    first = next(model.parameters())
    first.requires_grad_(False)  # never stepped: no optimizer state, no update
    opt = AdamX(model.parameters(), lr=1e-2, weight_decay=0.0)
    rows = train(model, opt, x, y, 4, OptimTelemetry(opt, every=2))
    assert [r["step"] for r in rows] == [2, 4]
    assert f(rows[-1], "beta2_hat") == pytest.approx(schedules.beta2_hat_adamx(4, 0.99))
    assert f(rows[-1], "sqrt_v_q50") > 0 and f(rows[-1], "m_abs_q50") > 0  # from the parameters with state
    # the frozen weight's coordinates did not move: they count as stalled
    assert f(rows[-1], "frac_step_below_eps") >= first.numel() / rows[-1]["numel"]
