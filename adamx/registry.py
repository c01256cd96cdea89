"""Optimizer registry: ``create_optimizer(name, params, **hparams)`` for every optimizer the paper compares."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch

from ._base import as_betas
from .adamx import AdamX
from .adax import AdaX
from .lion import Lion
from .sophia import SophiaG


def _adam_family(schedule: str, betas: tuple[float, float]) -> Callable[..., torch.optim.Optimizer]:
    """AdamX's class with a fixed beta2 schedule and that schedule's default betas."""

    def build(
        params: Any, *, betas: tuple[float, float] = betas, fused: Any = "auto", **hparams: Any
    ) -> AdamX:
        if "beta2_schedule" in hparams:
            raise ValueError(
                f"beta2_schedule is fixed to {schedule!r} by this optimizer name; use name 'adamx' with "
                "beta2_schedule=... to choose the schedule yourself."
            )
        return AdamX(params, betas=betas, beta2_schedule=schedule, fused=fused, **hparams)

    build.__signature__ = inspect.signature(AdamX)  # type: ignore[attr-defined]
    return build


# Every name's defaults are those of configs/optimizer/<name>.yaml (the paper's settings; fused="auto": torch's
# fused kernel where the parameters' device supports it, foreach elsewhere), so that
# create_optimizer(name, params) is the optimizer a run of the harness uses (tests/adamx/test_validation.py).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamx": _adam_family("adamx", (0.9, 0.99)),
    "adam": _adam_family("adam", (0.9, 0.999)),  # the paper's "Adam" rows: AdamW
    "adax": partial(
        AdaX, fused="auto"
    ),  # the paper's shared Adam/AdaX/AdamX settings; AdaX-W's authors use lr 5e-3, wd 5e-2
    "sgd": partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-3),
    # decoupled decay like the paper's other Adam-family rows (torch's default is coupled L2)
    "radam": partial(torch.optim.RAdam, weight_decay=0.01, decoupled_weight_decay=True),
    "lion": partial(Lion, weight_decay=0.1),
    "sophiag": SophiaG,
    "adam+adafactor": _adam_family("adafactor", (0.9, 0.8)),
    "adam+adax": _adam_family("adax", (0.9, 1e-4)),
    "adam+adamx": _adam_family("adamx", (0.9, 0.99)),
}
"""Name -> constructor; ``name`` fields of configs/optimizer/*.yaml are these keys."""


def _accepted(builder: Callable[..., Any]) -> set[str]:
    target = builder.func if isinstance(builder, partial) else builder
    return {k for k in inspect.signature(target).parameters if k != "params"}


def create_optimizer(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], **hparams: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` (tensors or param groups, e.g. from ``decay_param_groups``).

    Hyperparameters are the constructor's keywords; per-group values (such as each group's weight_decay)
    win over them. ``betas`` may be a list (as YAML gives it).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}.")
    builder = OPTIMIZERS[name]
    unknown = sorted(set(hparams) - _accepted(builder))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} for optimizer {name!r}; it accepts {sorted(_accepted(builder))}."
        )
    if "betas" in hparams:
        hparams["betas"] = as_betas(hparams["betas"])
    return builder(params, **hparams)
