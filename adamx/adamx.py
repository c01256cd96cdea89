"""AdamX (Algorithm 1 of the paper) and the "Adam + beta2_hat_t" family of the ablation (Tables 7-10).

    beta1_hat_t = (beta1 - beta1^t)/(1 - beta1^t),  beta2_hat_t = schedule(t, betas[1])
    m <- beta1_hat_t m + (1 - beta1_hat_t) g,        v <- beta2_hat_t v + (1 - beta2_hat_t) g^2
    theta <- theta (1 - lr wd) - lr m / (sqrt(v) + eps)

State per parameter: ``step`` (int), ``exp_avg`` (Adam's raw first moment; Algorithm 1's m_t is
exp_avg / (1 - beta1^t)), ``exp_avg_sq`` (Algorithm 1's v_t itself, already unbiased), and
``exp_avg_scale``/``exp_avg_sq_scale`` (the stored moments are scale * the exact ones; 1.0 except on the
fused path, which tracks float32 rounding of its kernel's betas there), and ``decay_carry`` (the fused
path's exact / applied cumulative weight decay, ~1 +- 3e-8). Every path reads every path's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from . import schedules
from ._adaptive import StepScalars, foreach_step, fused_step, single_tensor_step
from ._base import MomentOptimizer, as_betas, check_beta, check_nonnegative, dense_grad, zeros_moment
from .state import canonical_state_dict, fill_missing_group_keys, internal_state_dict

Beta2Schedule = str | Callable[[int], float]


def _bias_correction1(t: int, beta1: float) -> float:
    """1 - beta1^t, computed without cancellation."""
    return 1.0 if beta1 == 0.0 else -math.expm1(t * math.log1p(beta1 - 1.0))


class AdaptiveMomentOptimizer(MomentOptimizer):
    """Shared machinery of AdamX and AdaX: state, path selection, bucketing by step. Subclasses give the
    per-step scalars of the rule in ``adamx._adaptive``."""

    _moment_keys = ("exp_avg", "exp_avg_sq")
    _label = "AdamX"
    _optional_group_keys: dict[str, Any] = {"foreach": None, "fused": None}  # issue 17: filled when missing

    def _scalars(self, group: dict[str, Any], t: int) -> StepScalars:
        raise NotImplementedError

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fill_missing_group_keys(self, self._optional_group_keys)

    # issue 17: one state_dict layout whatever the path (adamx/state.py, docs/optimizer_state.md)
    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict with the exact moments in the layout of docs/optimizer_state.md on every path."""
        return canonical_state_dict(super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(internal_state_dict(state_dict))

    @staticmethod
    def _path(group: dict[str, Any], params: list[torch.Tensor]) -> str:
        if group["fused"]:
            return "fused"
        if group["foreach"]:
            return "foreach"
        if group["fused"] is None and group["foreach"] is None:
            # As torch: foreach on CUDA, the per-tensor loop elsewhere (faster than foreach on CPU here).
            return "foreach" if all(p.is_cuda for p in params) else "single"
        return "single"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step; ``closure`` re-evaluates the loss (run with grad enabled) and its value is returned."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            path = self._path(group, params)
            buckets: dict[tuple, tuple[list, list, list, list, list]] = {}
            for p in params:
                grad = dense_grad(p, self._label)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = zeros_moment(p)
                    state["exp_avg_sq"] = zeros_moment(p)
                    state["exp_avg_scale"] = 1.0
                    state["exp_avg_sq_scale"] = 1.0
                    state["decay_carry"] = 1.0
                state["step"] = int(state["step"]) + 1
                a, b = state.get("exp_avg_scale", 1.0), state.get("exp_avg_sq_scale", 1.0)
                if path != "fused" and (a != 1.0 or b != 1.0):
                    state["exp_avg"].div_(a)
                    state["exp_avg_sq"].div_(b)
                    state["exp_avg_scale"] = state["exp_avg_sq_scale"] = a = b = 1.0
                carry = state.get("decay_carry", 1.0)
                key = (state["step"], a, b, carry, p.device) if path == "fused" else (state["step"],)
                bucket = buckets.setdefault(key, ([], [], [], [], []))
                bucket[0].append(p)
                bucket[1].append(grad)
                bucket[2].append(state["exp_avg"])
                bucket[3].append(state["exp_avg_sq"])
                bucket[4].append(state)
            for key, (ps, gs, ms, vs, states) in buckets.items():
                scalars = self._scalars(group, key[0])
                if path == "fused":
                    a, b, carry = fused_step(ps, gs, ms, vs, scalars, key[1], key[2], key[3])
                    for state in states:
                        state["exp_avg_scale"], state["exp_avg_sq_scale"], state["decay_carry"] = a, b, carry
                elif path == "foreach":
                    foreach_step(ps, gs, ms, vs, scalars)
                else:
                    single_tensor_step(ps, gs, ms, vs, scalars)
        return loss


def _check_common(lr: Any, eps: Any, weight_decay: Any, foreach: Any, fused: Any) -> None:
    check_nonnegative("lr", lr)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)
    if fused and foreach:
        raise ValueError("fused=True and foreach=True cannot both be set; choose one path.")


class AdamX(AdaptiveMomentOptimizer):
    """AdamX (Algorithm 1) with decoupled weight decay; ``beta2_schedule`` selects the ablation's beta2_hat_t.

    Args:
        params: parameters or param groups (per-group values override the defaults below).
        lr: learning rate eta.
        betas: (beta1, schedule parameter): beta2 for "adamx"/"adam"/"adax", c for "adafactor".
        eps: added to sqrt(v).
        weight_decay: lambda of theta <- theta (1 - eta lambda); use ``decay_param_groups`` to restrict it
            to conv/linear weights as the paper does.
        beta2_schedule: "adamx" (Eq. 11), "adam" (Eq. 13: then this is exactly AdamW), "adafactor", "adax",
            or a callable t -> beta2_hat_t (t is 1-based; 1 - beta2_hat_t is then formed in float64).
        foreach, fused: the path, as in torch.optim.AdamW. Default: foreach on CUDA, single-tensor elsewhere;
            both are exact to float32 rounding. ``fused=True`` (3-4x faster on CPU) runs torch's fused
            AdamW kernel with adjusted scalars (see ``adamx._adaptive``); late in long runs its float32 v
            drifts by ~5e-9 relative per step (2.7e-5 after 5,000 steps at t = 60k) where foreach stays ~1e-5.
    """

    _optional_group_keys = {"foreach": None, "fused": None, "beta2_schedule": "adamx"}  # issue 17

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        beta2_schedule: Beta2Schedule = "adamx",
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        betas = as_betas(betas)
        _check_common(lr, eps, weight_decay, foreach, fused)
        _check_schedule(beta2_schedule, betas)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, beta2_schedule=beta2_schedule,
            foreach=foreach, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            group["betas"] = as_betas(group["betas"])
            _check_common(group["lr"], group["eps"], group["weight_decay"], group["foreach"], group["fused"])
            _check_schedule(group["beta2_schedule"], group["betas"])

    def _scalars(self, group: dict[str, Any], t: int) -> StepScalars:
        lr = float(group["lr"])
        beta1, beta2 = group["betas"]
        schedule = group["beta2_schedule"]
        if callable(schedule):
            w = 1.0 - float(schedule(t))
        else:
            w = schedules.ONE_MINUS_BETA2_SCHEDULES[schedule](t, beta2)
        return StepScalars(
            decay=1.0 - lr * float(group["weight_decay"]),
            beta1=beta1,
            w=w,
            step_size=lr / _bias_correction1(t, beta1),
            eps=float(group["eps"]),
        )


def _check_schedule(schedule: Any, betas: tuple[float, float]) -> None:
    check_beta(0, betas[0])
    if callable(schedule):
        return
    if not isinstance(schedule, str) or schedule not in schedules.BETA2_SCHEDULES:
        raise ValueError(
            f"Unknown beta2_schedule {schedule!r}; choose one of {sorted(schedules.BETA2_SCHEDULES)} "
            "or pass a callable t -> beta2_hat_t."
        )
    schedules.validate_schedule_parameter(schedule, betas[1])
