"""The LR schedules: Eq. 15 (without its typo) and constant, and their defaults."""

import pytest

from experiments.schedule import build_lr_factor, constant, linear_to_min


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
