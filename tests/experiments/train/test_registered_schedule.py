"""A β̂2,t schedule a user registers by name (issue 26 item 5; here because tests/adamx/ was another
helper's): registered
without ``one_minus``, AdamX must still follow the user's formula, step by step, not only agree with
itself across a resume. Checked against a float64 reference of the documented update (adamx/_adaptive.py):
v <- lerp(v, g^2, 1 - β̂2,t), m <- lerp(m, g, 1 - β1), θ <- θ - lr / (1 - β1^t) * m / (sqrt(v) + eps)."""

import math

import pytest
import torch

import adamx

NAME = "test-harmonic"


def harmonic(t, beta2):
    """The user's formula: β̂2,t = 1 - (1 - β2) / t (written with operators, as registration asks)."""
    return 1 - (1 - beta2) / t


@pytest.fixture(scope="module", autouse=True)
def registered():
    adamx.register_beta2_schedule(NAME, harmonic)  # no one_minus: the default 1 - fn(t, β2) in float64


def reference(theta0, grads, lr, beta1, beta2, eps):
    theta, m, v = theta0.double().clone(), torch.zeros_like(theta0, dtype=torch.float64), None
    v = torch.zeros_like(m)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.double()
        w = (1 - beta2) / t  # 1 - β̂2,t of the formula, exactly
        m = m + (1 - beta1) * (g - m)
        v = v + w * (g * g - v)
        theta = theta - lr / (1 - beta1**t) * m / (v.sqrt() + eps)
        out.append(theta.clone())
    return out


@pytest.mark.parametrize("foreach", [False, True])
def test_a_schedule_registered_without_one_minus_follows_the_users_formula(foreach):
    beta2 = 0.999999  # 1 - β̂2,t ~ 1e-6 / t: where a float32 or a missing "1 -" shows at once
    model = torch.nn.Linear(3, 1, bias=False)
    theta0 = model.weight.detach().clone()
    lr, eps = 1e-3, 1e-8
    opt = adamx.AdamX(
        model.parameters(),
        lr=lr,
        betas=(0.9, beta2),
        eps=eps,
        weight_decay=0.0,
        beta2_schedule=NAME,
        foreach=foreach,
    )
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(1, 3, generator=g) * (1 + t % 3) for t in range(40)]
    want = reference(theta0, grads, lr, 0.9, beta2, eps)
    for t, grad in enumerate(grads):
        model.weight.grad = grad.clone()
        opt.step()
        torch.testing.assert_close(
            model.weight.detach().double(), want[t], rtol=1e-5, atol=1e-7, msg=f"step {t + 1}"
        )
    assert math.isclose(
        adamx.schedules.ONE_MINUS_BETA2_SCHEDULES[NAME](7.0, beta2), (1 - beta2) / 7, rel_tol=1e-9
    )
