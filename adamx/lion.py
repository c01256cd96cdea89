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
    axpy_,
    check_beta,
    check_nonnegative,
    compiled_split_groups,
    compiling,
    copy_back,
    dense_grad,
    foreach_axpy_,
    group_by_device_and_dtype,
    on_like,
    split_groups,
    working_copies,
    zeros_moment,
)


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

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Lion step; returns the closure's loss when a closure is given."""
        loss = self._run_closure(closure)
        if compiling():  # lr, weight decay and the betas enter the graph as tensors
            groups = compiled_split_groups(self, self._split_group)
        else:
            groups = split_groups(self, self._split_group)
        with torch.no_grad():
            for work, (lr, wd, beta1, beta2) in groups:
                if work["params"]:
                    _lion(work, lr, wd, beta1, beta2)
        return loss

    def _split_group(self, group: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
        """(lr, weight decay, beta1, beta2) and the tensors to update, the state created where missing (run
        eagerly, outside a compiled graph)."""
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
        work = dict(params=params, grads=grads, exp_avgs=exp_avgs, foreach=group["foreach"] is not False)
        return [group["lr"], group["weight_decay"], *group["betas"]], work


def _lion(work: dict[str, Any], lr: Any, wd: Any, beta1: Any, beta2: Any) -> None:
    """One Lion update of ``work``'s tensors; the scalars are host floats or 0-d float64 tensors."""
    work_p, work_g, write_back = working_copies(work["params"], work["grads"])
    if work["foreach"]:
        _foreach_lion(work_p, work_g, work["exp_avgs"], lr, wd, beta1, beta2)
    else:
        for p, g, m in zip(work_p, work_g, work["exp_avgs"]):
            p.mul_(on_like(1.0 - lr * wd, m))
            update = axpy_(m.mul(on_like(beta1, m)), g, on_like(1.0 - beta1, m)).sign_()
            axpy_(p, update, on_like(-lr, m))
            axpy_(m.mul_(on_like(beta2, m)), g, on_like(1.0 - beta2, m))
    copy_back(write_back)


def _foreach_lion(params, grads, exp_avgs, lr, wd, beta1, beta2) -> None:
    for ps, gs, ms in group_by_device_and_dtype([params, grads, exp_avgs]):
        torch._foreach_mul_(ps, on_like(1.0 - lr * wd, ms[0]))
        update = torch._foreach_mul(ms, on_like(beta1, ms[0]))
        foreach_axpy_(update, gs, on_like(1.0 - beta1, ms[0]))
        torch._foreach_sign_(update)
        foreach_axpy_(ps, update, on_like(-lr, ms[0]))
        torch._foreach_mul_(ms, on_like(beta2, ms[0]))
        foreach_axpy_(ms, gs, on_like(1.0 - beta2, ms[0]))


def _check(lr: Any, betas: tuple[float, float], weight_decay: Any) -> None:
    check_nonnegative("lr", lr)
    check_beta(0, betas[0], high_inclusive=True)
    check_beta(1, betas[1], high_inclusive=True)
    check_nonnegative("weight_decay", weight_decay)
