"""One and two optimizer steps worked out by hand, for every optimizer and path (issue 16, patterns 1 and 2).

The settings are far from the defaults on purpose (beta1 0 and 0.5, beta2 0.5, eps 0.1, lr * wd up to 0.5), so
that the order of weight decay and update, the bias correction, where eps sits (outside the square root), and
every beta2_hat_t schedule at t = 2 each move the result by far more than rounding. Parameters are float64,
so each path must reproduce the hand value to ~1e-15 relative: the checks use rel=1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch

import adamx
from adamx import schedules as S

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = ["single", "foreach", "fused", "capturable", "capturable-foreach"]
SQRT2 = math.sqrt(2.0)


def _path_kw(path: str) -> dict:
    return dict(foreach="foreach" in path, fused=path == "fused", capturable=path.startswith("capturable"))


def _steps(opt_factory, theta0, grads, dtype=torch.float64):
    """Run ``opt_factory([p])`` over ``grads`` from ``theta0``; the parameter after each step, as lists."""
    p = torch.tensor(theta0, dtype=dtype, requires_grad=True)
    opt = opt_factory([p])
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        out.append(p.detach().tolist())
    return out, opt, p


def _close(got, expected, rel=1e-12, abs_=1e-15) -> None:
    assert got == pytest.approx(expected, rel=rel, abs=abs_), f"{got} != {expected}"


# ---- AdamX (Algorithm 1) -----------------------------------------------------------------------------------

THETA0 = [2.0, -1.0, 0.0]
G1 = [0.3, -0.4, 0.0]
G2 = [-0.1, 0.2, 0.0]


@pytest.mark.parametrize("path", PATHS)
def test_adamx_first_step_by_hand(path: str) -> None:
    """Decay before the update, eps outside sqrt(v), beta1_hat_1 = beta2_hat_1 = 0 (m = g, v = g^2)."""
    # t = 1: m = g, v = g^2, theta <- theta - lr (g / (|g| + eps) + wd theta), lr 0.1, wd 0.5, eps 0.1
    #   2.0: 2.0 - 0.1 (0.3/0.4 + 1.0) = 2.0 - 0.075 - 0.1 = 1.825
    #  -1.0: -1.0 - 0.1 (-0.4/0.5 - 0.5) = -1.0 + 0.08 + 0.05 = -0.87
    #   0.0: g = 0, theta = 0: 0 / (0 + eps) = 0 (eps keeps it from 0/0)
    # (update then decay gives 1.82875; eps inside the sqrt gives 1.83118)
    out, _, _ = _steps(
        lambda p: adamx.AdamX(p, lr=0.1, betas=(0.9, 0.99), eps=0.1, weight_decay=0.5, **_path_kw(path)),
        THETA0,
        [G1],
    )
    _close(out[0], [1.825, -0.87, 0.0])


@pytest.mark.parametrize("path", PATHS)
def test_adamx_second_step_by_hand(path: str) -> None:
    """t = 2 with beta1 = 0.5, beta2 = 0.5: beta1_hat_2 = 1/3 and AdamX's beta2_hat_2 = 1/(1 + 0.5^0.5) =
    2 - sqrt(2); catches a hard-coded beta, a bias correction at t - 1, or a schedule of another name."""
    # m_2 = (1/3) m_1 + (2/3) g_2 = [0.1 - 0.2/3, -0.4/3 + 0.4/3, 0] = [1/30, 0, 0]
    # v_2 = (2 - sqrt2) v_1 + (sqrt2 - 1) g_2^2 = [0.0568629..., 0.1102943..., 0]
    # theta_2 = theta_1 (1 - 0.05) - 0.1 m_2 / (sqrt(v_2) + 0.1)
    #   1.825 * 0.95 - 0.1 (1/30) / (0.2384595 + 0.1) = 1.73375 - 0.0098485 = 1.7239015
    #   -0.87 * 0.95 - 0 = -0.8265 (m_2 = 0 exactly: only the decay acts)
    v2 = [(2 - SQRT2) * 0.09 + (SQRT2 - 1) * 0.01, (2 - SQRT2) * 0.16 + (SQRT2 - 1) * 0.04, 0.0]
    expected = [1.825 * 0.95 - 0.1 * (1 / 30) / (math.sqrt(v2[0]) + 0.1), -0.8265, 0.0]
    assert expected[0] == pytest.approx(1.7239015, abs=1e-7)
    out, opt, p = _steps(
        lambda p: adamx.AdamX(p, lr=0.1, betas=(0.5, 0.5), eps=0.1, weight_decay=0.5, **_path_kw(path)),
        THETA0,
        [G1, G2],
    )
    _close(out[0], [1.825, -0.87, 0.0])
    _close(out[1], expected)
    sd = opt.state_dict()["state"][0]
    assert int(sd["step"]) == 2
    # exp_avg is Adam's raw m: Algorithm 1's m_t times 1 - beta1^t = 0.75
    _close(sd["exp_avg"].tolist(), [0.75 / 30, 0.0, 0.0])
    _close(sd["exp_avg_sq"].tolist(), v2)


# beta2_hat_2 of each schedule with parameter 0.5 (c = 0.5 for Adafactor), by hand:
#   adam      (b - b^2)/(1 - b^2) = 0.25/0.75 = 1/3
#   adafactor 1 - 2^-0.5 = 1 - 1/sqrt2
#   adax      1 - b/((1 + b)^2 - 1) = 1 - 0.5/1.25 = 0.6
#   adamx     (1 - b^(1-b))/(1 - b^(2(1-b))) = 1/(1 + 2^-0.5) = 2 - sqrt2
BETA2_HAT_2 = {"adam": 1 / 3, "adafactor": 1 - 1 / SQRT2, "adax": 0.6, "adamx": 2 - SQRT2}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("schedule", sorted(BETA2_HAT_2))
def test_every_schedule_weights_the_second_gradient_by_hand(schedule: str, path: str) -> None:
    """v_2 = beta2_hat_2 g_1^2 + (1 - beta2_hat_2) g_2^2 for each ablation schedule through the optimizer: a
    schedule table that maps a name to another schedule, or a parameter replaced by its default, moves v_2."""
    b = BETA2_HAT_2[schedule]
    lr, eps = 0.2, 1e-3
    out, opt, p = _steps(
        lambda p: adamx.AdamX(
            p, lr=lr, betas=(0.0, 0.5), eps=eps, weight_decay=0.0, beta2_schedule=schedule, **_path_kw(path)
        ),
        THETA0,
        [G1, G2],
    )
    v2 = [b * g1 * g1 + (1 - b) * g2 * g2 for g1, g2 in zip(G1, G2)]
    # beta1 = 0: m_t = g_t, no bias correction at all
    theta1 = [t - lr * g / (abs(g) + eps) for t, g in zip(THETA0, G1)]
    theta2 = [t - lr * g / (math.sqrt(v) + eps) for t, g, v in zip(theta1, G2, v2)]
    _close(out[1], theta2)
    _close(opt.state_dict()["state"][0]["exp_avg_sq"].tolist(), v2)


# ---- the schedules themselves, at exact t ----------------------------------------------------------------

# (name, parameter, t, beta2_hat_t) by hand
EXACT = [
    ("adam", 0.5, 2, 1 / 3),
    ("adam", 0.5, 3, 3 / 7),  # (0.5 - 0.125)/(1 - 0.125)
    ("adam", 0.9, 2, 0.9 / 1.9),  # b (1 - b)/(1 - b^2) = b/(1 + b)
    ("adafactor", 0.5, 4, 0.5),  # 1 - 4^-0.5
    ("adafactor", 0.5, 16, 0.75),
    ("adafactor", 0.8, 32, 0.9375),  # 1 - 2^-4
    ("adax", 0.5, 2, 0.6),
    ("adax", 0.5, 3, 15 / 19),  # 1 - 0.5/(3.375 - 1) = 1 - 4/19
    ("adax", 1.0, 3, 6 / 7),  # 1 - 1/(8 - 1)
    ("adamx", 0.5, 2, 2 - SQRT2),
    ("adamx", 0.5, 3, 0.5 / (1 - 0.5 / SQRT2)),  # q = 2^-0.5: (1 - q^2)/(1 - q^3)
    ("adamx", 0.75, 5, (1 - 0.75**1.0) / (1 - 0.75**1.25)),  # (1 - b^(0.25*4))/(1 - b^(0.25*5))
]


@pytest.mark.parametrize("name,b,t,expected", EXACT, ids=[f"{n}-{b}-t{t}" for n, b, t, _ in EXACT])
def test_beta2_hat_at_exact_steps(name: str, b: float, t: int, expected: float) -> None:
    """Each schedule and its complement at a hand-computed (t, parameter): catches t shifted by one, a swapped
    exponent (b^(b t) for b^((1-b) t)), or 1 + b read as b."""
    assert S.BETA2_SCHEDULES[name](t, b) == pytest.approx(expected, rel=1e-13)
    assert S.ONE_MINUS_BETA2_SCHEDULES[name](t, b) == pytest.approx(1 - expected, rel=1e-13)
    tensor = S.ONE_MINUS_BETA2_SCHEDULES[name](torch.tensor([float(t)]), b)
    assert tensor.item() == pytest.approx(1 - expected, rel=1e-13)


def test_beta1_hat_at_exact_steps() -> None:
    """beta1_hat_t = (b - b^t)/(1 - b^t) (Algorithm 1, line 6), with non-default beta1."""
    assert S.beta1_hat(1, 0.5) == 0.0
    assert S.beta1_hat(2, 0.5) == pytest.approx(1 / 3, rel=1e-15)
    assert S.beta1_hat(3, 0.5) == pytest.approx(3 / 7, rel=1e-15)
    assert S.one_minus_beta1_hat(2, 0.8) == pytest.approx(0.2 / 0.36, rel=1e-15)
    assert S.beta1_hat(5, 0.0) == 0.0 and S.one_minus_beta1_hat(5, 0.0) == 1.0


def test_default_schedule_parameters_are_the_papers() -> None:
    """Tables 7-10: Adam 0.999, Adafactor c = 0.8, AdaX 1e-4, AdamX 0.99."""
    assert S.DEFAULT_BETA2 == {"adam": 0.999, "adafactor": 0.8, "adax": 1e-4, "adamx": 0.99}


# ---- AdaX-W ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_adax_two_steps_by_hand(path: str) -> None:
    """AdaX-W in its authors' form: no bias correction of m, raw v growing by (1 + b2), eps on the raw sqrt(v);
    b1 = b2 = 0.5, eps = 0.1 and lr * wd = 0.05 make each of those visible."""

    # t = 1: m = 0.5 g = [0.15, -0.2, 0]; v = 0.5 g^2 = [0.045, 0.08, 0]; (1 + b2)^1 - 1 = 0.5
    #   theta = 2 (1 - 0.05) - 0.1 sqrt(0.5) 0.15 / (sqrt(0.045) + 0.1) = 1.9 - 0.0339811 = 1.8660189
    # t = 2: m = 0.5 m + 0.5 g_2 = [0.025, 0, 0]; v = 1.5 v + 0.5 g_2^2 = [0.0725, 0.14, 0]; 1.5^2 - 1 = 1.25
    def theta(prev, m, v, bc):
        return prev * 0.95 - 0.1 * math.sqrt(bc) * m / (math.sqrt(v) + 0.1)

    t1 = [theta(2.0, 0.15, 0.045, 0.5), theta(-1.0, -0.2, 0.08, 0.5), 0.0]
    t2 = [theta(t1[0], 0.025, 0.0725, 1.25), t1[1] * 0.95, 0.0]
    assert t1[0] == pytest.approx(1.8660189, abs=1e-7) and t2[0] == pytest.approx(1.7651485, abs=1e-7)
    out, opt, p = _steps(
        lambda p: adamx.AdaX(p, lr=0.1, betas=(0.5, 0.5), eps=0.1, weight_decay=0.5, **_path_kw(path)),
        THETA0,
        [G1, G2],
    )
    _close(out[0], t1)
    _close(out[1], t2)
    st = opt.state_dict()["state"][0]
    assert int(st["step"]) == 2
    _close(st["exp_avg"].tolist(), [0.025, 0.0, 0.0])
    # stored normalised: v_raw / ((1 + b2)^t - 1)
    _close(st["exp_avg_sq"].tolist(), [0.0725 / 1.25, 0.14 / 1.25, 0.0])


def test_adax_default_eps_is_the_authors_1e_12() -> None:
    """AdaX's eps default (1e-12, on the raw sqrt(v)) is not Adam's 1e-8; the class defaults are the paper's."""
    group = adamx.AdaX([torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert group["eps"] == 1e-12 and group["betas"] == (0.9, 1e-4)
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.01


# ---- Lion --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [None, False, True])
def test_lion_two_steps_by_hand(foreach) -> None:
    """theta <- theta (1 - lr wd) - lr sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g; b1 = 0.5, b2 = 0.25,
    lr = 0.5, wd = 1: swapping b1/b2, updating m before the sign, or decaying after the update all differ."""
    # t = 1: sign(0.5 g_1) = [1, -1, 0, 1]; theta = 0.5 theta_0 - 0.5 sign = [0.5, 0, 0.25, -0.5]
    #        m = 0.75 g_1 = [0.75, -0.375, 0, 0.1875]
    # t = 2: c = 0.5 m + 0.5 g_2 = [0.125, 0.0625, 0.1, -0.40625] -> sign [1, 1, 1, -1]
    #        theta = 0.5 theta_1 - 0.5 sign = [-0.25, -0.5, -0.375, 0.25]
    #        m = 0.25 m + 0.75 g_2 = [-0.1875, 0.28125, 0.15, -0.703125]
    out, opt, p = _steps(
        lambda p: adamx.Lion(p, lr=0.5, betas=(0.5, 0.25), weight_decay=1.0, foreach=foreach),
        [2.0, -1.0, 0.5, 0.0],
        [[1.0, -0.5, 0.0, 0.25], [-0.5, 0.5, 0.2, -1.0]],
        dtype=torch.float32,
    )
    assert out == [[0.5, 0.0, 0.25, -0.5], [-0.25, -0.5, -0.375, 0.25]]
    _close(opt.state[p]["exp_avg"].tolist(), [-0.1875, 0.28125, 0.15, -0.703125], rel=1e-7)


def test_lion_class_defaults() -> None:
    """Lion's class defaults (lr 1e-4, betas (0.9, 0.99), wd 0; the registry adds wd 0.1)."""
    group = adamx.Lion([torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)


# ---- SophiaG -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [None, False, True])
def test_sophiag_step_at_and_around_the_clip(foreach) -> None:
    """ratio = |m| / (rho bs h + 1e-15) clipped at 1: below, exactly at and above the clip, h = 0 with m != 0
    (clipped to a sign step) and h = 0 with m = 0 (0, not 0/0); decay before the update."""
    w = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = adamx.SophiaG([w], lr=0.25, betas=(0.5, 0.5), rho=0.25, weight_decay=1.0, bs=2, foreach=foreach)
    w.grad = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    opt.update_hessian()  # h = 0.5 * 0 + 0.5 g^2 = [2, 2, 2, 2, 0, 0]
    assert opt.state[w]["hessian"].tolist() == [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]
    assert opt.state[w]["step"] == 0  # a Hessian refresh is not an optimizer step
    w.grad = torch.tensor([4.0, -2.0, 1.0, 0.0, -0.5, 0.0], dtype=torch.float64)
    opt.step()
    # m = 0.5 g = [2, -1, 0.5, 0, -0.25, 0]; rho bs h = 0.25 * 2 * h = [1, 1, 1, 1, 0, 0]
    # ratio = [2 -> 1, 1 (at the clip), 0.5, 0, 0.25/1e-15 -> 1, 0/1e-15 = 0]
    # theta = 0.75 theta - 0.25 sign(m) ratio = [0.75-0.25, -0.75+0.25, 0.375-0.125, 0, 1.5+0.25, 2.25]
    assert w.detach().tolist() == pytest.approx([0.5, -0.5, 0.25, 0.0, 1.75, 2.25], rel=1e-14, abs=1e-14)
    assert opt.state[w]["exp_avg"].tolist() == [2.0, -1.0, 0.5, 0.0, -0.25, 0.0]
    assert opt.state[w]["step"] == 1


@pytest.mark.parametrize("foreach", [False, True])
def test_sophiag_second_step_and_hessian_ema_by_hand(foreach) -> None:
    """m <- b1 m + (1 - b1) g with b1 = 0.25 and h <- b2 h + (1 - b2) g^2 with b2 = 0.75 (the two betas are
    not interchangeable); bs passed to step() wins over the group's for that call only."""
    w = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = adamx.SophiaG([w], lr=0.1, betas=(0.25, 0.75), rho=1.0, weight_decay=0.0, bs=1, foreach=foreach)
    w.grad = torch.tensor([2.0, 4.0], dtype=torch.float64)
    opt.update_hessian()  # h = 0.25 * [4, 16] = [1, 4]
    w.grad = torch.tensor([-4.0, 4.0], dtype=torch.float64)
    opt.update_hessian()  # h = 0.75 [1, 4] + 0.25 [16, 16] = [4.75, 7]
    assert opt.state[w]["hessian"].tolist() == [4.75, 7.0]
    w.grad = torch.tensor([8.0, -8.0], dtype=torch.float64)
    opt.step()  # m = 0.75 g = [6, -6]; ratio = 6 / [4.75, 7] -> [1, 6/7]
    expected = [1.0 - 0.1, 1.0 + 0.1 * 6 / 7]
    assert w.detach().tolist() == pytest.approx(expected, rel=1e-14)
    w.grad = torch.tensor([4.0, 4.0], dtype=torch.float64)
    opt.step(bs=2)  # m = 0.25 [6, -6] + 0.75 * 4 = [4.5, 1.5]; ratio = m / (2 h) = [4.5/9.5, 1.5/14]
    expected = [expected[0] - 0.1 * 4.5 / 9.5, expected[1] - 0.1 * 1.5 / 14]
    assert w.detach().tolist() == pytest.approx(expected, rel=1e-14)
    assert opt.param_groups[0]["bs"] == 1 and opt.state[w]["step"] == 2


def test_sophiag_class_defaults_are_the_authors() -> None:
    """lr 1e-4, betas (0.965, 0.99), rho 0.04, weight_decay 0.1, bs 5120 (Liuhong99/Sophia)."""
    group = adamx.SophiaG([torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert (group["lr"], group["betas"], group["rho"], group["weight_decay"], group["bs"]) == (
        1e-4,
        (0.965, 0.99),
        0.04,
        0.1,
        5120,
    )


def test_gnb_hessian_update_uses_only_the_sampled_loss_gradient() -> None:
    """gnb_hessian_update drops the training gradient first, refreshes h from the sampled loss's gradient,
    and leaves no gradient behind."""
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = adamx.SophiaG([w], betas=(0.9, 0.5))
    (w * 100.0).sum().backward()  # a stale training gradient that must not leak into h
    loss = adamx.gnb_hessian_update(opt, lambda: (3.0 * w).sum())  # gradient [3, 3]
    assert loss.item() == pytest.approx(-3.0)
    assert opt.state[w]["hessian"].tolist() == [4.5, 4.5]  # 0.5 * 0 + 0.5 * 9
    assert w.grad is None


# ---- 16-bit parameters: one rounding per step ------------------------------------------------------------


@pytest.mark.parametrize("path", ["single", "foreach", "capturable"])
def test_bf16_step_is_the_float32_step_rounded_once(path: str) -> None:
    """A bf16 parameter steps in float32 and is rounded once: the result is bf16(float32 result), not a
    decay rounded to bf16 and then an update rounded again."""
    theta = [1.0, -3.0, 0.0078125]  # exact in bf16
    out32, _, _ = _steps(
        lambda p: adamx.AdamX(p, lr=0.01, eps=0.1, weight_decay=0.3, **_path_kw(path)),
        theta,
        [[0.5, 0.25, -1.0]],
        dtype=torch.float32,
    )
    out16, opt, p = _steps(
        lambda p: adamx.AdamX(p, lr=0.01, eps=0.1, weight_decay=0.3, **_path_kw(path)),
        theta,
        [[0.5, 0.25, -1.0]],
        dtype=torch.bfloat16,
    )
    assert out16[0] == torch.tensor(out32[0]).to(torch.bfloat16).float().tolist()
    assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_trainer_refreshes_sophiag_hessian_after_exactly_every_kth_step(tmp_path) -> None:
    """With hessian_update_interval k = 3 the Trainer refreshes h after optimizer steps 3, 6, 9, 12, 15 of 16
    (two epochs of 8): the same count as a schedule shifted by one (1, 4, 7, ...), so the steps are checked."""
    from tests.helpers import tiny_trainer

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    opt = adamx.SophiaG(model.parameters(), lr=1e-3)
    refreshed_after = []
    update = opt.update_hessian

    def spy() -> None:
        refreshed_after.append(opt.state[model.weight]["step"])  # optimizer steps taken so far
        update()

    opt.update_hessian = spy
    trainer = tiny_trainer(tmp_path, model, opt, samples=32, batch_size=4, hessian_interval=3)
    trainer.train_epoch()
    trainer.epoch = 1
    trainer.train_epoch()
    assert trainer.step == 16
    assert refreshed_after == [3, 6, 9, 12, 15]


# ---- parameters at different step counts in one group; foreach chunks ------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_parameters_at_different_steps_use_their_own_t(path: str) -> None:
    """A parameter that had no gradient at step 1 takes its FIRST step (t = 1: m = g, v = g^2) while its
    neighbour in the same group takes its second (t = 2): one t for the whole group would move it differently."""
    a = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = adamx.AdamX([a, b], lr=0.1, betas=(0.5, 0.5), eps=0.1, weight_decay=0.5, **_path_kw(path))
    a.grad = torch.tensor([0.3], dtype=torch.float64)
    opt.step()  # b has no grad: untouched, no state
    assert b.item() == 2.0 and b not in opt.state
    a.grad = torch.tensor([-0.1], dtype=torch.float64)
    b.grad = torch.tensor([0.3], dtype=torch.float64)
    opt.step()
    # a: t = 2, the second step of test_adamx_second_step_by_hand; b: t = 1, its first step
    v2 = (2 - SQRT2) * 0.09 + (SQRT2 - 1) * 0.01
    assert a.item() == pytest.approx(1.825 * 0.95 - 0.1 * (1 / 30) / (math.sqrt(v2) + 0.1), rel=1e-12)
    assert b.item() == pytest.approx(1.825, rel=1e-12)
    assert (int(opt.state[a]["step"]), int(opt.state[b]["step"])) == (2, 1)


def test_foreach_chunks_step_every_tensor_exactly_once() -> None:
    """The CPU foreach path runs in chunks of ~1M elements: tensors on both sides of a chunk boundary (and a
    tensor that alone exceeds it) each take exactly one step."""
    sizes = [700_000, 700_000, 3, (1 << 20) + 1, 5]
    params = [torch.zeros(n, requires_grad=True) for n in sizes]
    opt = adamx.AdamX(params, lr=0.5, eps=1.0, weight_decay=0.0, foreach=True)
    for k, p in enumerate(params):
        p.grad = torch.full_like(p, float(k + 1))
    opt.step()
    for k, p in enumerate(params):
        g = float(k + 1)  # t = 1: theta = 0 - lr g / (|g| + eps)
        expected = torch.tensor(-0.5 * g / (g + 1.0), dtype=torch.float32)
        assert torch.equal(p.detach().unique(), expected.reshape(1)), f"tensor {k}"


def test_sampled_cross_entropy_draws_labels_from_each_rows_softmax() -> None:
    """Labels come from softmax over each row's classes: with one dominant logit per row the sampled label is
    that class and the loss ~0; a softmax over the batch dimension would also draw the 4 classes that no row
    favours (each column then spreads over 16 rows), a loss of ~50."""
    torch.manual_seed(0)
    logits = torch.full((16, 8), -50.0)
    for row in range(16):
        logits[row, row % 4] = 50.0  # classes 4-7 are never the dominant one
    assert adamx.sampled_cross_entropy(logits).item() < 1e-6
