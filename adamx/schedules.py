"""The exponential decay rates beta1_hat_t and beta2_hat_t as pure float64 functions of the step t.

Every schedule comes in two forms: ``beta2_hat_*`` gives the rate itself and ``one_minus_beta2_hat_*`` gives
its complement 1 - beta2_hat_t computed directly, because AdamX's complement reaches ~1e-7 and forming it as
``1 - beta2_hat_t`` would cost half its significant digits. Powers b**x with b near 1 are evaluated as
exp(x * log1p(b - 1)) and 1 - b**x as -expm1(x * log1p(b - 1)), which keeps full float64 precision.
The step t is 1-based, as in Algorithm 1 of the paper.

The complements also take t as a tensor (the optimizers' compiled and capturable step): the same formulas then
run as torch ops on t's device, in float64 (float32 where the device has no float64), with no host sync.
Custom schedules are added by name with ``register_beta2_schedule`` so that optimizer state_dicts stay
plain data (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "BETA2_SCHEDULES",
    "DEFAULT_BETA2",
    "ONE_MINUS_BETA2_SCHEDULES",
    "beta1_hat",
    "beta2_hat_adafactor",
    "beta2_hat_adam",
    "beta2_hat_adamx",
    "beta2_hat_adax",
    "one_minus_beta1_hat",
    "one_minus_beta2_hat_adafactor",
    "one_minus_beta2_hat_adam",
    "one_minus_beta2_hat_adamx",
    "one_minus_beta2_hat_adax",
    "register_beta2_schedule",
    "validate_schedule_parameter",
]

Step = float | torch.Tensor


def _check_step(t: Step) -> Step:
    """float(t) for a number (checked >= 1); a float64 copy for a tensor (not checked: that would sync)."""
    if isinstance(t, torch.Tensor):
        return t.to(torch.float32 if t.device.type == "mps" else torch.float64)
    if not t >= 1:
        raise ValueError(f"Invalid step t: {t}; the schedules are defined for 1-based steps t >= 1.")
    return float(t)


def _xp(t: Step) -> Any:
    """The module whose exp/expm1/log act on t: torch for tensors, math for numbers."""
    return torch if isinstance(t, torch.Tensor) else math


def _log(b: float) -> float:
    """log(b) for b in (0, 1), exact for b near 1 (b - 1 is exact there by Sterbenz's lemma)."""
    return math.log1p(b - 1.0)


# ---- Adam's bias-corrected rate (beta - beta^t) / (1 - beta^t); also beta1_hat_t of AdamX --------------


def beta2_hat_adam(t: float, beta2: float) -> float:
    """Adam's implicit rate (beta2 - beta2^t)/(1 - beta2^t) (Eq. 13); tends to beta2 (Eq. 14)."""
    t = _check_step(t)
    if beta2 == 0.0:
        return 0.0
    c = one_minus_beta2_hat_adam(t, beta2)
    if c < 0.5:  # 1 - c is then exact to half an ulp
        return 1.0 - c
    lb = _log(beta2)
    # beta2 - beta2^t = -beta2 * expm1((t-1) log beta2); 1 - beta2^t = -expm1(t log beta2)
    return beta2 * math.expm1((t - 1.0) * lb) / math.expm1(t * lb)


def one_minus_beta2_hat_adam(t: Step, beta2: float) -> Step:
    """1 - Adam's rate = (1 - beta2)/(1 - beta2^t)."""
    t = _check_step(t)
    if beta2 == 0.0:
        return t * 0.0 + 1.0
    return (1.0 - beta2) / -_xp(t).expm1(t * _log(beta2))


def beta1_hat(t: float, beta1: float) -> float:
    """AdamX's first-moment rate (beta1 - beta1^t)/(1 - beta1^t) (Algorithm 1, line 6)."""
    return beta2_hat_adam(t, beta1)


def one_minus_beta1_hat(t: float, beta1: float) -> float:
    """1 - beta1_hat_t = (1 - beta1)/(1 - beta1^t)."""
    return one_minus_beta2_hat_adam(t, beta1)


# ---- Adafactor: 1 - t^(-c) ---------------------------------------------------------------------------


def beta2_hat_adafactor(t: float, c: float) -> float:
    """Adafactor's rate 1 - t^(-c) (c = 0.8 in the ablation)."""
    return -math.expm1(-c * math.log(_check_step(t)))


def one_minus_beta2_hat_adafactor(t: Step, c: float) -> Step:
    """1 - Adafactor's rate = t^(-c)."""
    t = _check_step(t)
    return _xp(t).exp(-c * _xp(t).log(t))


# ---- AdaX: 1 - beta2/((1 + beta2)^t - 1) -------------------------------------------------------------


def one_minus_beta2_hat_adax(t: Step, beta2: float) -> Step:
    """1 - AdaX's rate = beta2/((1 + beta2)^t - 1)."""
    x = _check_step(t) * math.log1p(beta2)
    if isinstance(x, torch.Tensor):
        return torch.where(x > 700.0, beta2 * torch.exp(-x), beta2 / torch.expm1(x))
    if x > 700.0:  # (1 + beta2)^t - 1 = (1 + beta2)^t to double precision; avoid overflow
        return beta2 * math.exp(-x)
    return beta2 / math.expm1(x)


def beta2_hat_adax(t: float, beta2: float) -> float:
    """AdaX's implicit rate 1 - beta2/((1 + beta2)^t - 1) (beta2 = 1e-4 in the ablation); tends to 1."""
    t = _check_step(t)
    c = one_minus_beta2_hat_adax(t, beta2)
    if c < 0.5:
        return 1.0 - c
    lb = math.log1p(beta2)
    # ((1+b)^t - 1 - b)/((1+b)^t - 1) = (1+b) expm1((t-1) log1p b)/expm1(t log1p b)
    return (1.0 + beta2) * math.expm1((t - 1.0) * lb) / math.expm1(t * lb)


# ---- AdamX (Eq. 11): (1 - beta2^((1-beta2)(t-1)))/(1 - beta2^((1-beta2)t)) -------------------------------


def beta2_hat_adamx(t: float, beta2: float) -> float:
    """AdamX's rate (Eq. 11); 0 at t = 1 and tends to 1 (Eq. 12)."""
    t = _check_step(t)
    c = one_minus_beta2_hat_adamx(t, beta2)
    if c < 0.5:
        return 1.0 - c
    a = (1.0 - beta2) * _log(beta2)  # log of beta2^(1 - beta2), negative
    return math.expm1((t - 1.0) * a) / math.expm1(t * a)


def one_minus_beta2_hat_adamx(t: Step, beta2: float) -> Step:
    """1 - AdamX's rate = beta2^((1-beta2)(t-1)) (1 - beta2^(1-beta2))/(1 - beta2^((1-beta2)t))."""
    t = _check_step(t)
    a = (1.0 - beta2) * _log(beta2)
    return _xp(t).exp((t - 1.0) * a) * math.expm1(a) / _xp(t).expm1(t * a)


BUILTIN_SCHEDULES = ("adam", "adafactor", "adax", "adamx")

BETA2_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "adam": beta2_hat_adam,
    "adafactor": beta2_hat_adafactor,
    "adax": beta2_hat_adax,
    "adamx": beta2_hat_adamx,
}
"""Name -> beta2_hat(t, parameter); the parameter is beta2 (c for adafactor)."""

ONE_MINUS_BETA2_SCHEDULES: dict[str, Callable[[Step, float], Step]] = {
    "adam": one_minus_beta2_hat_adam,
    "adafactor": one_minus_beta2_hat_adafactor,
    "adax": one_minus_beta2_hat_adax,
    "adamx": one_minus_beta2_hat_adamx,
}
"""Name -> 1 - beta2_hat(t, parameter), computed without cancellation."""

DEFAULT_BETA2: dict[str, float] = {"adam": 0.999, "adafactor": 0.8, "adax": 1e-4, "adamx": 0.99}
"""The parameter each schedule has in the paper's ablation (Tables 7-10)."""

_PARAMETER_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "adam": ("0 <= beta2 < 1", lambda b: 0.0 <= b < 1.0),
    "adafactor": ("c > 0", lambda c: c > 0.0),
    # AdaX's authors reject betas[1] >= 1 (AdaXW.__init__ in github.com/switchablenorms/AdaX, AdaX.py)
    "adax": ("0 < beta2 < 1", lambda b: 0.0 < b < 1.0),
    "adamx": ("0 < beta2 < 1", lambda b: 0.0 < b < 1.0),
}


def validate_schedule_parameter(name: str, value: float) -> None:
    """Raise ValueError naming the value when ``value`` is outside the schedule's valid range."""
    if name not in _PARAMETER_RANGES:
        raise ValueError(
            f"Unknown beta2 schedule {name!r}; choose one of {sorted(BETA2_SCHEDULES)} or register your own "
            "with adamx.register_beta2_schedule(name, fn)."
        )
    rule, ok = _PARAMETER_RANGES[name]
    if not isinstance(value, (int, float)) or not ok(float(value)):
        raise ValueError(f"Invalid betas[1] = {value!r} for the {name!r} beta2 schedule; it needs {rule}.")


def register_beta2_schedule(
    name: str,
    fn: Callable[[Step, float], Step],
    *,
    one_minus: Callable[[Step, float], Step] | None = None,
) -> None:
    """Make ``beta2_schedule=name`` select ``fn(t, beta2) -> beta2_hat_t`` (beta2 = the group's betas[1]).

    Param groups then hold only the name, so state_dicts save and load with ``weights_only=True``; register
    the same name before ``load_state_dict`` in the loading process. ``one_minus(t, beta2)`` gives
    1 - beta2_hat_t directly (default: 1 - fn(t, beta2) in float64, which loses digits when it is ~1e-7).
    Both receive t as a float in eager steps and as a float64 tensor under torch.compile or with
    capturable=True: write them with operators or torch functions (``b ** t``, not ``math.pow``).
    Registering a name again replaces it; the built-in names cannot be replaced.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Invalid schedule name {name!r}; register a custom schedule under a non-empty string."
        )
    if name in BUILTIN_SCHEDULES:
        raise ValueError(
            f"beta2 schedule {name!r} is built in and cannot be replaced; register another name."
        )
    if not callable(fn) or (one_minus is not None and not callable(one_minus)):
        raise ValueError(f"register_beta2_schedule({name!r}, ...) needs callables (t, beta2) -> value.")
    BETA2_SCHEDULES[name] = fn
    ONE_MINUS_BETA2_SCHEDULES[name] = one_minus or (lambda t, b: 1.0 - _as_float64(fn(t, b)))
    _PARAMETER_RANGES[name] = ("a finite number", lambda b: math.isfinite(b))


def _as_float64(x: Step) -> Step:
    """A schedule's value as float64 (a float, or a float64 tensor where the device has float64)."""
    if not isinstance(x, torch.Tensor):
        return float(x)
    return x if x.device.type == "mps" else x.to(torch.float64)
