"""SophiaG (Liu et al. 2024, github Liuhong99/Sophia): clipped sign update preconditioned by a diagonal
Gauss-Newton-Bartlett Hessian estimate, refreshed every k steps.

    theta <- theta (1 - lr wd);  m <- beta1 m + (1 - beta1) g
    theta <- theta - lr sign(m) min(|m| / (rho * bs * h + 1e-15), 1)
    every k steps (update_hessian): h <- beta2 h + (1 - beta2) g_hat * g_hat,

where g_hat is the gradient of the mean loss on labels sampled from the model's own softmax and ``bs`` the
number of samples (tokens) in that mean; the authors fold that factor B of the GNB estimate B g_hat^2 into the
step. Defaults are the authors': lr 1e-4, betas (0.965, 0.99), rho 0.04, weight_decay 0.1, bs 5120.

Trainer sequence (or call ``gnb_hessian_update``): every step ``loss.backward(); opt.step(); opt.zero_grad()``;
every k-th step additionally ``opt.zero_grad(); sampled_loss.backward(); opt.update_hessian(); opt.zero_grad()``.
Set ``bs`` to the batch's sample count per param group (``create_optimizer("sophiag", ..., bs=64)``) or per
call (``opt.step(bs=64)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

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

_HESSIAN_EPS = 1e-15


class SophiaG(MomentOptimizer):
    """SophiaG; state per parameter: ``step`` (int), ``exp_avg`` (m), ``hessian`` (h)."""

    _moment_keys = ("exp_avg", "hessian")
    # the authors' param groups have no bs (their step() takes it) and no foreach
    _optional_group_keys: dict[str, Any] = {"bs": 5120, "foreach": None}

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        *,
        bs: int = 5120,
        foreach: bool | None = None,
    ) -> None:
        betas = as_betas(betas)
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, bs=bs, foreach=foreach)
        _check(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        """The constructor's checks, for every group (``add_param_group`` included)."""
        super()._check_group(group)
        group["betas"] = as_betas(group["betas"])
        _check(group)

    def _state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = zeros_moment(p)
            state["hessian"] = zeros_moment(p)
        return state

    @torch.no_grad()
    def update_hessian(self) -> None:
        """h <- beta2 h + (1 - beta2) g * g from the gradients now in ``p.grad`` (those of the sampled-label loss)."""
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = dense_grad(p, "SophiaG")
                h = self._state(p)["hessian"]
                g = g.to(h.dtype)
                h.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)

    def step(self, closure: Callable[[], Any] | None = None, bs: int | None = None) -> Any:
        """One SophiaG step; ``bs`` overrides the groups' batch-size factor for this call."""
        loss = self._run_closure(closure)
        split = functools.partial(self._split_group, bs=bs)
        if compiling():  # lr, weight decay, beta1 and rho * bs enter the graph as tensors
            groups = compiled_split_groups(self, split)
        else:
            groups = split_groups(self, split)
        with torch.no_grad():
            for work, (lr, wd, beta1, factor) in groups:
                if work["params"]:
                    _sophiag(work, lr, wd, beta1, factor)
        return loss

    def _split_group(self, group: dict[str, Any], bs: int | None) -> tuple[list[float], dict[str, Any]]:
        """(lr, weight decay, beta1, rho * bs) and the tensors to update; creates missing state and counts the
        step (run eagerly, outside a compiled graph: ``step`` stays an int)."""
        params, grads, exp_avgs, hessians = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            grads.append(dense_grad(p, "SophiaG"))
            params.append(p)
            state = self._state(p)
            state["step"] = int(state["step"]) + 1
            exp_avgs.append(state["exp_avg"])
            hessians.append(state["hessian"])
        factor = float(group["rho"]) * float(group["bs"] if bs is None else bs)
        work = dict(
            params=params,
            grads=grads,
            exp_avgs=exp_avgs,
            hessians=hessians,
            foreach=group["foreach"] is not False,
        )
        return [group["lr"], group["weight_decay"], group["betas"][0], factor], work


def _sophiag(work: dict[str, Any], lr: Any, wd: Any, beta1: Any, factor: Any) -> None:
    """One SophiaG update of ``work``'s tensors; the scalars are host floats or 0-d float64 tensors."""
    work_p, work_g, write_back = working_copies(work["params"], work["grads"])
    if work["foreach"]:
        _foreach_sophiag(work_p, work_g, work["exp_avgs"], work["hessians"], lr, wd, beta1, factor)
    else:
        for p, g, m, h in zip(work_p, work_g, work["exp_avgs"], work["hessians"]):
            axpy_(p, p, on_like(-lr * wd, m))  # theta (1 - lr wd) with one rounding
            axpy_(m.mul_(on_like(beta1, m)), g, on_like(1.0 - beta1, m))
            ratio = (m.abs() / (h * on_like(factor, m) + _HESSIAN_EPS)).clamp_(max=1.0)
            neg_lr = on_like(-lr, m)
            if isinstance(neg_lr, torch.Tensor):
                p.add_(m.sign().mul_(ratio).mul_(neg_lr))
            else:
                p.addcmul_(m.sign(), ratio, value=neg_lr)
    copy_back(write_back)


def _foreach_sophiag(params, grads, exp_avgs, hessians, lr, wd, beta1, factor) -> None:
    for ps, gs, ms, hs in group_by_device_and_dtype([params, grads, exp_avgs, hessians]):
        foreach_axpy_(ps, ps, on_like(-lr * wd, ms[0]))
        torch._foreach_mul_(ms, on_like(beta1, ms[0]))
        foreach_axpy_(ms, gs, on_like(1.0 - beta1, ms[0]))
        denom = torch._foreach_mul(hs, on_like(factor, ms[0]))
        torch._foreach_add_(denom, _HESSIAN_EPS)
        ratio = torch._foreach_abs(ms)
        torch._foreach_div_(ratio, denom)
        torch._foreach_clamp_max_(ratio, 1.0)
        torch._foreach_mul_(ratio, torch._foreach_sign(ms))
        foreach_axpy_(ps, ratio, on_like(-lr, ms[0]))


def sampled_cross_entropy(logits: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (N, C) against labels drawn from softmax(logits): the loss whose
    gradient squared (times N) is the Gauss-Newton-Bartlett estimate of the diagonal Hessian."""
    with torch.no_grad():
        labels = torch.multinomial(torch.softmax(logits.detach().float(), dim=-1), 1).squeeze(-1)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


def gnb_hessian_update(optimizer: SophiaG, sampled_loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Refresh SophiaG's Hessian EMA: zero grads, backward the sampled-label loss, ``update_hessian()``, zero
    grads again. ``sampled_loss_fn`` runs the forward pass and returns the mean loss on sampled labels
    (e.g. ``sampled_cross_entropy(model(x))``); its batch size is the ``bs`` the optimizer should use."""
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = sampled_loss_fn()
    loss.backward()
    optimizer.update_hessian()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _check(group: dict[str, Any]) -> None:
    check_nonnegative("lr", group["lr"])
    check_beta(0, group["betas"][0])
    check_beta(1, group["betas"][1])
    check_nonnegative("rho", group["rho"])
    check_nonnegative("weight_decay", group["weight_decay"])
    bs = group["bs"]
    if not isinstance(bs, (int, float)) or isinstance(bs, bool) or not bs > 0:
        raise ValueError(
            f"Invalid bs: {bs!r}; it is the number of samples (tokens) per batch and must be > 0."
        )
