"""The Monte-Carlo of Eq. 10: small simulations agree with the closed forms they should agree with,
and disagree with Eq. 10 where its hidden assumption (∇f independent over time) is broken."""

from __future__ import annotations

import pytest

from scripts import mc_eq10

G = mc_eq10.GradModel(mu=0.5, s=0.5, sigma=1.0)


def test_gradient_moments() -> None:
    # E[a²] = μ² + s², Var[a²] = 2s⁴ + 4μ²s² for a ~ N(μ, s²); C = 2σ⁴ + 4σ²E[a²] + Var[a²]
    assert G.mean_sq == 0.5 and G.var_sq == 0.375
    assert mc_eq10.eq10(0.9, G) == pytest.approx(0.1 / 1.9 * (2 + 2 + 0.375))
    assert mc_eq10.eq9_finite(0.9, 10_000, G) == pytest.approx(mc_eq10.eq10(0.9, G))


def test_simulation_matches_eq10_for_iid_gradients() -> None:
    var, se = mc_eq10.simulate(0.9, 100, 40_000, G, mode="iid", seed=1)
    expected = mc_eq10.eq9_finite(0.9, 100, G)
    assert abs(var - expected) < 4 * se
    assert var == pytest.approx(expected, rel=0.04)


def test_fixed_full_batch_gradient_breaks_eq10() -> None:
    var, se = mc_eq10.simulate(0.9, 100, 40_000, G, mode="fixed", seed=2)
    assert var == pytest.approx(mc_eq10.fixed_gradient_limit(0.9, G), rel=0.04)
    assert var > 2 * mc_eq10.eq10(0.9, G)


def test_adamx_weights_and_simulation() -> None:
    t, b = 200, 0.99
    c = b ** (1 - b)
    closed = (1 - c) ** 2 * (1 - c ** (2 * t)) / ((1 - c**2) * (1 - c**t) ** 2)
    assert mc_eq10.adamx_sum_w2(b, t) == pytest.approx(closed, rel=1e-9)
    var, se = mc_eq10.simulate(b, t, 20_000, G, mode="iid", schedule="adamx", seed=3)
    assert var == pytest.approx(closed * (G.noise_part + G.var_sq), rel=0.05)
    assert mc_eq10.adamx_limit(b, G) > 0


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="'iid' or 'fixed'"):
        mc_eq10.simulate(0.9, 10, 10, G, mode="plateau")
