"""Property tests of the beta_hat_t schedules (paper Section 3.2-3.3)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adamx import schedules as S

steps = st.integers(min_value=1, max_value=10**7)
NAMES = sorted(S.BUILTIN_SCHEDULES)  # custom names registered by other tests have no DEFAULT_BETA2


@given(st.sampled_from(NAMES))
def test_every_schedule_is_zero_at_step_one(name: str) -> None:
    b = S.DEFAULT_BETA2[name]
    assert S.BETA2_SCHEDULES[name](1, b) == 0.0
    assert S.ONE_MINUS_BETA2_SCHEDULES[name](1, b) == 1.0


@settings(max_examples=300)
@given(st.sampled_from(NAMES), steps)
def test_values_in_unit_interval_and_complement_consistent(name: str, t: int) -> None:
    b = S.DEFAULT_BETA2[name]
    bh, c = S.BETA2_SCHEDULES[name](t, b), S.ONE_MINUS_BETA2_SCHEDULES[name](t, b)
    assert 0.0 <= bh <= 1.0 and 0.0 <= c <= 1.0
    assert abs(bh + c - 1.0) <= 4e-16


@settings(max_examples=200)
@given(st.floats(min_value=0.5, max_value=0.9999), st.integers(min_value=1, max_value=10**6))
def test_adamx_complement_keeps_its_digits(beta2: float, t: int) -> None:
    """1 - beta2_hat_t from the direct formula agrees with a high-precision evaluation (math.fsum-free check:
    the ratio form D_{t-1}/D_t evaluated with expm1 in a second, algebraically different way)."""
    a = (1 - beta2) * math.log(beta2)
    direct = S.one_minus_beta2_hat_adamx(t, beta2)
    other = (math.expm1(t * a) - math.expm1((t - 1) * a)) / math.expm1(t * a)
    assert math.isclose(direct, other, rel_tol=1e-6) or abs(direct - other) < 1e-15


def test_adamx_tends_to_one_and_adam_to_beta2() -> None:
    assert S.beta2_hat_adamx(10**7, 0.99) == 1.0  # Eq. 12
    assert 1 - S.beta2_hat_adamx(62_480, 0.99) < 3e-7
    assert math.isclose(S.beta2_hat_adam(10**6, 0.999), 0.999, rel_tol=1e-15)  # Eq. 14
    assert (
        S.beta2_hat_adax(10**6, 1e-4) == 1.0
        and S.one_minus_beta2_hat_adax(10**6, 1e-4) < 1e-40
        and S.beta2_hat_adafactor(10**6, 0.8) > 0.9999
    )


@settings(max_examples=300)
@given(steps)
def test_property_2_adamx_dominates_beta1_hat(t: int) -> None:
    """Paper property (2): beta2_hat_t >= beta1_hat_t for all t, AdamX with (0.9, 0.99)."""
    assert S.beta2_hat_adamx(t, 0.99) >= S.beta1_hat(t, 0.9)


@given(st.integers(min_value=1, max_value=10**5))
def test_schedules_are_monotone(t: int) -> None:
    for name in NAMES:
        b = S.DEFAULT_BETA2[name]
        assert S.BETA2_SCHEDULES[name](t + 1, b) >= S.BETA2_SCHEDULES[name](t, b) - 2.3e-16


def test_invalid_parameters_name_the_value() -> None:
    import pytest

    with pytest.raises(ValueError, match="1.5"):
        S.validate_schedule_parameter("adamx", 1.5)
    with pytest.raises(ValueError, match="t: 0"):
        S.beta2_hat_adamx(0, 0.99)


@settings(max_examples=100)
@given(st.sampled_from(NAMES), st.lists(steps, min_size=1, max_size=8))
def test_tensor_complements_equal_the_float_ones(name: str, ts: list[int]) -> None:
    """The compiled/capturable step evaluates the complements on a float32 step tensor, in float64."""
    b = S.DEFAULT_BETA2[name]
    got = S.ONE_MINUS_BETA2_SCHEDULES[name](torch.tensor(ts, dtype=torch.float32), b)
    assert got.dtype == torch.float64
    for t, g in zip(ts, got.tolist()):
        expected = S.ONE_MINUS_BETA2_SCHEDULES[name](t, b)
        assert math.isclose(g, expected, rel_tol=4e-15) or abs(g - expected) < 1e-300
