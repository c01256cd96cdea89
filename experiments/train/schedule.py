"""Learning-rate schedules as functions of the optimizer step (the paper's Eq. 15, and constant).

The trainer turns a schedule into a factor on each param group's initial LR, so groups that start
with different LRs keep their ratios.
"""

from __future__ import annotations

from collections.abc import Callable


def linear_to_min(step: int, peak: float, minimum: float, t1: int) -> float:
    """Eq. 15 without its "1 +" typo: linear from ``peak`` at step 0 to ``minimum`` at ``t1``, then flat."""
    if step <= t1:
        return peak + (minimum - peak) * step / t1
    return minimum


def constant(step: int, peak: float) -> float:
    """The same LR at every step (the paper's SwinV2 runs)."""
    return peak


SCHEDULES = ("linear_to_min", "constant")


def build_lr_factor(
    name: str,
    peak: float,
    total_steps: int,
    min_lr: float | None = None,
    t1: int | None = None,
    t1_fraction: float = 0.6,
) -> Callable[[int], float]:
    """``step -> lr(step) / peak`` for schedule ``name``.

    ``min_lr`` null means ``peak / 100`` (the ratio of every paper experiment); ``t1`` null means
    ``t1_fraction * total_steps`` (0.6, as in the authors' code).
    """
    if peak <= 0:
        raise ValueError(f"The peak learning rate must be positive, got optimizer.lr={peak}.")
    if name == "constant":
        return lambda step: 1.0
    if name != "linear_to_min":
        raise ValueError(f"Unknown schedule {name!r}; choose one of {list(SCHEDULES)}.")
    minimum = peak / 100 if min_lr is None else float(min_lr)
    if t1 is None:
        if not 0 < t1_fraction <= 1:
            raise ValueError(f"schedule.t1_fraction must be in (0, 1], got {t1_fraction}.")
        t1 = max(1, round(t1_fraction * total_steps))
    if t1 <= 0:
        raise ValueError(f"schedule.t1 must be a positive number of steps, got {t1}.")
    return lambda step: linear_to_min(step, peak, minimum, int(t1)) / peak
