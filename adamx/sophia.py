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

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_missing_group_keys(self, self._optional_group_keys)

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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, bs: int | None = None) -> Any:
        """One SophiaG step; ``bs`` overrides the groups' batch-size factor for this call."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
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
            if not params:
                continue
            factor = float(group["rho"]) * float(group["bs"] if bs is None else bs)
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            beta1 = group["betas"][0]
            work_p, work_g, write_back = working_copies(params, grads)
            if group["foreach"] is not False:
                _foreach_sophiag(work_p, work_g, exp_avgs, hessians, lr, wd, beta1, factor)
            else:
                for p, g, m, h in zip(work_p, work_g, exp_avgs, hessians):
                    p.add_(p, alpha=-lr * wd)  # theta (1 - lr wd) with one rounding
                    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                    ratio = (m.abs() / (h * factor + _HESSIAN_EPS)).clamp_(max=1.0)
                    p.addcmul_(m.sign(), ratio, value=-lr)
            copy_back(write_back)
        return loss


def _foreach_sophiag(params, grads, exp_avgs, hessians, lr, wd, beta1, factor) -> None:
    for ps, gs, ms, hs in group_by_device_and_dtype([params, grads, exp_avgs, hessians]):
        torch._foreach_add_(ps, ps, alpha=-lr * wd)
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, gs, alpha=1.0 - beta1)
        denom = torch._foreach_mul(hs, factor)
        torch._foreach_add_(denom, _HESSIAN_EPS)
        ratio = torch._foreach_abs(ms)
        torch._foreach_div_(ratio, denom)
        torch._foreach_clamp_max_(ratio, 1.0)
        torch._foreach_mul_(ratio, torch._foreach_sign(ms))
        torch._foreach_add_(ps, ratio, alpha=-lr)


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
