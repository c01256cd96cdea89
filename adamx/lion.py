"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), decoupled weight decay.

    theta <- theta (1 - lr wd) - lr sign(beta1 m + (1 - beta1) g)
    m     <- beta2 m + (1 - beta2) g

Same arithmetic, in the same order, as the ``lion-pytorch`` package (its default, non-rescaled decay).
State: ``exp_avg`` (m), float32 for 16-bit parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ._base import (
    MomentOptimizer,
    as_betas,
    check_beta,
    check_nonnegative,
    copy_back,
    dense_grad,
    group_by_device_and_dtype,
    working_copies,
    zeros_moment,
)
from .state import fill_missing_group_keys


class Lion(MomentOptimizer):
    """Lion with defaults lr 1e-4, betas (0.9, 0.99), weight_decay 0; ``foreach=True`` batches the tensor ops."""

    _moment_keys = ("exp_avg",)
    # lion-pytorch's param groups hold only lr, betas and weight_decay
    _optional_group_keys: dict[str, Any] = {"foreach": None}

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        betas = as_betas(betas)
        _check(lr, betas, weight_decay)
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, foreach=foreach))

    def _check_group(self, group: dict[str, Any]) -> None:
        """The constructor's checks, for every group (``add_param_group`` included)."""
        super()._check_group(group)
        group["betas"] = as_betas(group["betas"])
        _check(group["lr"], group["betas"], group["weight_decay"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_missing_group_keys(self, self._optional_group_keys)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Lion step; returns the closure's loss when a closure is given."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                grads.append(dense_grad(p, "Lion"))
                params.append(p)
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = zeros_moment(p)
                exp_avgs.append(state["exp_avg"])
            if not params:
                continue
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            beta1, beta2 = group["betas"]
            work_p, work_g, write_back = working_copies(params, grads)
            if group["foreach"] is not False:
                _foreach_lion(work_p, work_g, exp_avgs, lr, wd, beta1, beta2)
            else:
                for p, g, m in zip(work_p, work_g, exp_avgs):
                    p.mul_(1.0 - lr * wd)
                    p.add_(m.mul(beta1).add_(g, alpha=1.0 - beta1).sign_(), alpha=-lr)
                    m.mul_(beta2).add_(g, alpha=1.0 - beta2)
            copy_back(write_back)
        return loss


def _foreach_lion(params, grads, exp_avgs, lr, wd, beta1, beta2) -> None:
    for ps, gs, ms in group_by_device_and_dtype([params, grads, exp_avgs]):
        torch._foreach_mul_(ps, 1.0 - lr * wd)
        update = torch._foreach_mul(ms, beta1)
        torch._foreach_add_(update, gs, alpha=1.0 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_add_(ps, update, alpha=-lr)
        torch._foreach_mul_(ms, beta2)
        torch._foreach_add_(ms, gs, alpha=1.0 - beta2)


def _check(lr: Any, betas: tuple[float, float], weight_decay: Any) -> None:
    check_nonnegative("lr", lr)
    check_beta(0, betas[0], high_inclusive=True)
    check_beta(1, betas[1], high_inclusive=True)
    check_nonnegative("weight_decay", weight_decay)
