"""Every optimizer and path against plain-Python references over a grid of hyperparameters (issue 16, pattern 1).

tests/adamx/test_reference.py runs 1,000 steps at the default betas, AdaX's tiny eps and lr * wd ~ 1e-5, so a
path that hard-codes a default or moves a small term agrees with it. Here each case is 4 steps on float64
parameters in two param groups with DIFFERENT hyperparameters (beta1 in {0, 0.5, 0.9}, eps in {1e-8, 1e-3,
0.1}, weight decay in {0, 0.1, 1}, lr up to 2), so a path that reads another group's value, a default, or
beta1 for beta2 is off by far more than the 1e-12 relative the checks allow. The references are written from
the equations (Algorithm 1, AdaX-W's authors' form, Lion, SophiaG) in plain Python floats, one element at a
time; none of them calls adamx.
"""

from __future__ import annotations

import math

import pytest
import torch
from lion_pytorch import Lion as LionPytorch

import adamx

pytestmark = pytest.mark.usefixtures("one_thread")

PATHS = ["single", "foreach", "fused", "capturable", "capturable-foreach"]
SHAPES = [(2, 3), (4,)]
STEPS = 4


def _path_kw(path: str) -> dict:
    return dict(foreach="foreach" in path, fused=path == "fused", capturable=path.startswith("capturable"))


def _theta0(i: int) -> list[float]:
    n = math.prod(SHAPES[i])
    return [(-1.0) ** k * (0.25 + 0.5 * k) + 0.1 * i for k in range(n)]


def _grad(t: int, i: int) -> list[float]:
    """Step t's gradient of parameter i: mixed signs, magnitudes 0.06 to 3, and some exact zeros."""
    n = math.prod(SHAPES[i])
    return [((7 * k + 3 * t + 5 * i) % 11 - 5) * 0.06 * (1 + (k + t) % 4) ** 1.5 for k in range(n)]


def _run(make, dtype=torch.float64, steps: int = STEPS, hessian_every: int = 0):
    """Two param groups (make receives the params); the flattened parameters after ``steps`` steps."""
    params = [torch.tensor(_theta0(i), dtype=dtype).reshape(s).requires_grad_() for i, s in enumerate(SHAPES)]
    opt = make(params)
    for t in range(1, steps + 1):
        for i, p in enumerate(params):
            p.grad = torch.tensor(_grad(t, i), dtype=dtype).reshape(SHAPES[i])
        opt.step()
        if hessian_every and t % hessian_every == 0:
            for i, p in enumerate(params):
                p.grad = torch.tensor(_grad(-t, i), dtype=dtype).reshape(SHAPES[i])
            opt.update_hessian()
    return [p.detach().flatten().tolist() for p in params], opt, params


def _assert_close(got: list[list[float]], expected: list[list[float]], rel: float) -> None:
    for i, (a, b) in enumerate(zip(got, expected)):
        scale = max(abs(x) for x in b)
        err = max(abs(x - y) for x, y in zip(a, b)) / scale
        assert err <= rel, f"param {i}: {err:.3g} relative to the reference"


# ---- plain-Python references --------------------------------------------------------------------------------


def _one_minus_pow(b: float, x: float) -> float:
    """1 - b^x; for b^x near 1 as -expm1(x ln b), else a 1e-6 difference would keep only 10 digits."""
    return 1.0 - b**x if b == 0.0 else -math.expm1(x * math.log(b))


def _beta2_hat(schedule: str, t: int, b: float) -> float:
    """Eq. 11 (adamx), Eq. 13 (adam), Adafactor 1 - t^-c, AdaX 1 - b/((1 + b)^t - 1), straight from the paper."""
    if schedule == "adam":
        return (b - b**t) / _one_minus_pow(b, t)
    if schedule == "adafactor":
        return 1 - t ** (-b)
    if schedule == "adax":
        return 1 - b / ((1 + b) ** t - 1)
    return _one_minus_pow(b, (1 - b) * (t - 1)) / _one_minus_pow(b, (1 - b) * t)


def _algorithm1(i: int, hp: dict, schedule: str, steps: int = STEPS):
    """AdamX's Algorithm 1 (any beta2_hat_t): theta_t = theta_{t-1} - lr (m_t/(sqrt(v_t) + eps) + wd theta_{t-1})."""
    theta = _theta0(i)
    m, v = [0.0] * len(theta), [0.0] * len(theta)
    b1, b2 = hp["betas"]
    for t in range(1, steps + 1):
        g = _grad(t, i)
        bh1 = (b1 - b1**t) / (1 - b1**t)
        bh2 = _beta2_hat(schedule, t, b2)
        for k in range(len(g)):
            m[k] = bh1 * m[k] + (1 - bh1) * g[k]
            v[k] = bh2 * v[k] + (1 - bh2) * g[k] ** 2
            theta[k] = theta[k] - hp["lr"] * (
                m[k] / (math.sqrt(v[k]) + hp["eps"]) + hp["weight_decay"] * theta[k]
            )
    return theta, m, v


def _adax_w(i: int, hp: dict, steps: int = STEPS):
    """AdaX-W as its authors write it: m = b1 m + (1 - b1) g; v = (1 + b2) v + b2 g^2;
    theta = theta - lr wd theta - lr sqrt((1 + b2)^t - 1) m / (sqrt(v) + eps)."""
    theta = _theta0(i)
    m, v = [0.0] * len(theta), [0.0] * len(theta)
    b1, b2 = hp["betas"]
    for t in range(1, steps + 1):
        g = _grad(t, i)
        bc = (1 + b2) ** t - 1
        for k in range(len(g)):
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = (1 + b2) * v[k] + b2 * g[k] ** 2
            theta[k] = (
                theta[k]
                - hp["lr"] * hp["weight_decay"] * theta[k]
                - hp["lr"] * math.sqrt(bc) * m[k] / (math.sqrt(v[k]) + hp["eps"])
            )
    return theta


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def _lion(i: int, hp: dict, steps: int = STEPS):
    """Lion: theta <- theta (1 - lr wd) - lr sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g."""
    theta = _theta0(i)
    m = [0.0] * len(theta)
    b1, b2 = hp["betas"]
    for t in range(1, steps + 1):
        g = _grad(t, i)
        for k in range(len(g)):
            c = b1 * m[k] + (1 - b1) * g[k]
            theta[k] = theta[k] * (1 - hp["lr"] * hp["weight_decay"]) - hp["lr"] * _sign(c)
            m[k] = b2 * m[k] + (1 - b2) * g[k]
    return theta


def _sophiag(i: int, hp: dict, bs: float, hessian_every: int, steps: int = STEPS):
    """SophiaG: theta <- theta (1 - lr wd) - lr sign(m) min(|m| / (rho bs h + 1e-15), 1), m an EMA of g with b1,
    h an EMA of g_hat^2 with b2 refreshed after every ``hessian_every``-th step."""
    theta = _theta0(i)
    m, h = [0.0] * len(theta), [0.0] * len(theta)
    b1, b2 = hp["betas"]
    for t in range(1, steps + 1):
        g = _grad(t, i)
        for k in range(len(g)):
            theta[k] = theta[k] * (1 - hp["lr"] * hp["weight_decay"])
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            ratio = min(abs(m[k]) / (hp["rho"] * bs * h[k] + 1e-15), 1.0)
            theta[k] = theta[k] - hp["lr"] * _sign(m[k]) * ratio
        if t % hessian_every == 0:
            gh = _grad(-t, i)
            for k in range(len(gh)):
                h[k] = b2 * h[k] + (1 - b2) * gh[k] ** 2
    return theta


# ---- the grid -----------------------------------------------------------------------------------------------

# (lr, beta1, eps, weight_decay); each case uses two of them, one per param group
SETTINGS = [
    (0.5, 0.0, 0.1, 1.0),
    (0.1, 0.5, 1e-3, 0.1),
    (1e-3, 0.9, 1e-8, 0.0),
    (0.3, 0.5, 1e-8, 1.0),
    (0.05, 0.9, 0.1, 0.1),
    (2.0, 0.0, 1e-3, 0.0),
]
PAIRS = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)]
# schedule -> its parameter per pair position (beta2, or c for adafactor), far from and at the paper's value
BETA2 = {
    "adamx": [0.5, 0.99, 0.9, 0.75, 0.999, 0.6],
    "adam": [0.5, 0.999, 0.9, 0.0, 0.99, 0.6],
    "adafactor": [0.5, 0.8, 1.0, 0.3, 0.8, 2.0],
    "adax": [0.5, 1e-4, 0.1, 0.9, 1e-2, 0.3],
}


def _hp(index: int, beta2: float) -> dict:
    lr, b1, eps, wd = SETTINGS[index]
    return dict(lr=lr, betas=(b1, beta2), eps=eps, weight_decay=wd)


def _case(pair: int, schedule: str) -> list[dict]:
    """The two groups' hyperparameters: different lr, beta1, eps, wd and beta2 in each."""
    a, b = PAIRS[pair]
    params = BETA2[schedule]
    return [_hp(a, params[pair]), _hp(b, params[(pair + 3) % len(params)])]


def _groups(params: list[torch.Tensor], hps: list[dict], **extra) -> list[dict]:
    return [{"params": [p], **hp, **extra} for p, hp in zip(params, hps)]


PAIR_IDS = [f"pair{k}" for k in range(len(PAIRS))]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pair", range(len(PAIRS)), ids=PAIR_IDS)
@pytest.mark.parametrize("schedule", sorted(BETA2))
def test_adam_family_matches_algorithm_1_over_the_grid(schedule: str, pair: int, path: str) -> None:
    """Algorithm 1 with every beta2_hat_t schedule, every path, per-group beta1/beta2/eps/lr/wd far from the
    defaults (float64: 1e-12 relative); also the exported m_t and v_t."""
    hps = _case(pair, schedule)
    got, opt, params = _run(
        lambda ps: adamx.AdamX(_groups(ps, hps), beta2_schedule=schedule, **_path_kw(path))
    )
    refs = [_algorithm1(i, hp, schedule) for i, hp in enumerate(hps)]
    _assert_close(got, [r[0] for r in refs], rel=1e-12)
    state = opt.state_dict()["state"]
    for i, (hp, (_, m_ref, v_ref)) in enumerate(zip(hps, refs)):
        b1 = hp["betas"][0]
        m = (state[i]["exp_avg"].flatten() / (1 - b1**STEPS)).tolist()  # Algorithm 1's m_t
        _assert_close([m, state[i]["exp_avg_sq"].flatten().tolist()], [m_ref, v_ref], rel=1e-12)
        assert int(state[i]["step"]) == STEPS


@pytest.mark.parametrize("path", ["single", "foreach", "fused"])
@pytest.mark.parametrize("pair", range(len(PAIRS)), ids=PAIR_IDS)
@pytest.mark.parametrize("schedule", ["adamx", "adax"])
def test_adam_family_float32_paths_over_the_grid(schedule: str, pair: int, path: str) -> None:
    """float32 parameters (the fused path's scaled moments, decay carry and kernel betas are float32 tricks):
    within float32 rounding of Algorithm 1 (2e-6 of the tensor's scale) at every grid point."""
    hps = _case(pair, schedule)
    got, _, _ = _run(
        lambda ps: adamx.AdamX(_groups(ps, hps), beta2_schedule=schedule, **_path_kw(path)),
        dtype=torch.float32,
    )
    _assert_close(got, [_algorithm1(i, hp, schedule)[0] for i, hp in enumerate(hps)], rel=2e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pair", range(len(PAIRS)), ids=PAIR_IDS)
def test_adam_schedule_is_torch_adamw_over_the_grid(pair: int, path: str) -> None:
    """beta2_schedule='adam' is AdamW for any betas, eps, lr and wd (torch's float64 AdamW as the reference)."""
    hps = _case(pair, "adam")
    got, _, _ = _run(lambda ps: adamx.create_optimizer("adam", _groups(ps, hps), **_path_kw(path)))
    ref, _, _ = _run(lambda ps: torch.optim.AdamW(_groups(ps, hps), foreach=False))
    _assert_close(got, ref, rel=1e-12)


ADAX = [  # (lr, beta1, beta2, eps, wd)
    (0.5, 0.0, 0.5, 0.1, 1.0),
    (0.1, 0.5, 1e-4, 1e-3, 0.1),
    (1e-3, 0.9, 0.1, 1e-12, 0.0),
    (0.3, 0.9, 0.9, 1e-8, 1.0),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pair", range(len(ADAX)))
def test_adax_matches_the_authors_equations_over_the_grid(pair: int, path: str) -> None:
    """AdaX-W with beta1 in {0, 0.5, 0.9}, beta2 in {1e-4, 0.1, 0.5, 0.9}, eps up to 0.1, per group."""
    hps = []
    for k in (pair, (pair + 1) % len(ADAX)):
        lr, b1, b2, eps, wd = ADAX[k]
        hps.append(dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd))
    got, _, _ = _run(lambda ps: adamx.AdaX(_groups(ps, hps), **_path_kw(path)))
    _assert_close(got, [_adax_w(i, hp) for i, hp in enumerate(hps)], rel=1e-12)


LION = [  # (lr, beta1, beta2, wd)
    (0.5, 0.0, 0.5, 1.0),
    (0.1, 0.5, 0.0, 0.1),
    (1e-3, 0.9, 0.99, 0.0),
    (0.3, 1.0, 0.9, 1.0),
    (0.05, 0.5, 1.0, 0.1),
]


@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("pair", range(len(LION)))
def test_lion_matches_its_equations_and_lion_pytorch_over_the_grid(pair: int, foreach) -> None:
    """Lion with betas anywhere in [0, 1] and lr * wd up to 0.5: the equations in float64, lion-pytorch bit
    for bit in float32."""
    hps = []
    for k in (pair, (pair + 2) % len(LION)):
        lr, b1, b2, wd = LION[k]
        hps.append(dict(lr=lr, betas=(b1, b2), weight_decay=wd))
    got, _, _ = _run(lambda ps: adamx.Lion(_groups(ps, hps), foreach=foreach))
    _assert_close(got, [_lion(i, hp) for i, hp in enumerate(hps)], rel=1e-14)
    ours, _, _ = _run(lambda ps: adamx.Lion(_groups(ps, hps), foreach=foreach), dtype=torch.float32)
    theirs, _, _ = _run(lambda ps: LionPytorch(_groups(ps, hps)), dtype=torch.float32)
    assert ours == theirs


SOPHIA = [  # (lr, beta1, beta2, rho, wd)
    (0.5, 0.0, 0.5, 1.0, 1.0),
    (0.1, 0.5, 0.0, 0.04, 0.1),
    (1e-3, 0.965, 0.99, 0.5, 0.0),
    (0.3, 0.9, 0.9, 0.04, 1.0),
]


@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("bs", [1, 64])
@pytest.mark.parametrize("pair", range(len(SOPHIA)))
def test_sophiag_matches_its_equations_over_the_grid(pair: int, bs: int, foreach) -> None:
    """SophiaG with betas, rho, bs, lr and wd far from the defaults, per group, Hessian refreshed after every
    second step: ratios both below and at the clip occur."""
    hps = []
    for k in (pair, (pair + 1) % len(SOPHIA)):
        lr, b1, b2, rho, wd = SOPHIA[k]
        hps.append(dict(lr=lr, betas=(b1, b2), rho=rho, weight_decay=wd))
    got, _, _ = _run(lambda ps: adamx.SophiaG(_groups(ps, hps), bs=bs, foreach=foreach), hessian_every=2)
    _assert_close(got, [_sophiag(i, hp, bs, 2) for i, hp in enumerate(hps)], rel=1e-13)
