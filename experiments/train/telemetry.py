"""Optimizer telemetry: what the optimizer's state and its update look like, per param group (issue 25).

At a log step the caller takes ``snapshot()`` before ``optimizer.step()`` and ``collect(step)`` after it;
between log steps nothing here runs, so nothing syncs the host. ``collect`` computes every number of every
group on the device and moves them to the host in one transfer. One row per param group:

- ``step`` (the trainer's), ``group``, ``numel``, ``lr``, ``weight_decay``;
- ``beta1_hat``, ``beta2_hat``: the rates of the first- and second-moment averages at this step, or the
  optimizer's equivalents (see ``OPTIMIZER_NOTES``); blank where the optimizer has none;
- ``sqrt_v_q10/q50/q90``: quantiles over the group's coordinates of sqrt(v_hat), the second-moment estimate
  the update divides by (blank without one); ``m_abs_q10/q50/q90``: the same for |m_hat|, the first moment
  the update uses; ``ratio_q50``: median of |m_hat| / (sqrt(v_hat) + eps), the per-coordinate step in units
  of lr before decay (blank without v);
- ``update_rms_over_lr``: RMS(theta_after - theta_before) / lr; ``update_rms_over_weight_rms``:
  RMS(update) / RMS(theta_before);
- ``decay_share``: RMS(decay part) / (RMS(decay part) + RMS(the rest)), where the decay part of a decoupled
  optimizer is lr * wd * theta_before exactly; blank for SGD's coupled L2 (it is inside the momentum);
- ``frac_step_below_eps``: the fraction of coordinates whose update without the decay part is smaller than
  ``step_eps * lr`` in absolute value (``step_eps`` is its own column): coordinates the gradient no longer
  moves, measured on the weights themselves, so an update lost to float32 rounding counts as 0.

Quantiles use every coordinate up to ``max_quantile_elems`` per group; a larger group is read at an even
stride (``quantile_sample`` says how many coordinates were used). Nothing here draws random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from adamx import schedules
from adamx.adamx import AdamX
from adamx.adax import AdaX
from adamx.lion import Lion
from adamx.sophia import SophiaG
from adamx.state import exact_moment

QUANTILES = (0.1, 0.5, 0.9)
OPTIM_COLUMNS = [
    "step", "group", "optimizer", "numel", "lr", "weight_decay", "beta1_hat", "beta2_hat",
    "sqrt_v_q10", "sqrt_v_q50", "sqrt_v_q90", "m_abs_q10", "m_abs_q50", "m_abs_q90", "ratio_q50",
    "update_rms_over_lr", "update_rms_over_weight_rms", "decay_share", "step_eps", "frac_step_below_eps",
    "quantile_sample",
]  # fmt: skip
"""The header of optim.csv."""

OPTIMIZER_NOTES = {
    "AdamX": "beta1_hat = (b1 - b1^t)/(1 - b1^t), beta2_hat = the group's schedule at t; m_hat = exp_avg/(1 - b1^t), "
    "v_hat = exp_avg_sq (already unbiased)",
    "AdaX": "beta1_hat = b1 (m is not bias-corrected), beta2_hat = 1 - b2/((1 + b2)^t - 1) (its normalised v); "
    "m_hat = exp_avg, v_hat = exp_avg_sq",
    "RAdam": "Adam's implicit rates (b - b^t)/(1 - b^t); m_hat = exp_avg/(1 - b1^t), v_hat = exp_avg_sq/(1 - b2^t)",
    "SGD": "beta1_hat = momentum, m_hat = the momentum buffer; no second moment; decay is coupled L2: blank",
    "Lion": "beta1_hat = betas[1] (the rate of its momentum average); m_hat = exp_avg; no second moment",
    "SophiaG": "beta1_hat = b1, m_hat = exp_avg; its preconditioner is a Hessian average, not a second moment: blank",
}

_NAN = math.nan


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])


def _quantiles(x: torch.Tensor, limit: int) -> tuple[torch.Tensor, int]:
    """QUANTILES of ``x`` (float32, 1-d) on its device, over at most ``limit`` coordinates read at an even stride."""
    if x.numel() > limit:
        stride = math.ceil(x.numel() / limit)
        x = x[::stride]
    q = torch.tensor(QUANTILES, dtype=torch.float32, device=x.device)
    return torch.quantile(x, q), int(x.numel())


def _rms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dtype=torch.float64) / math.sqrt(max(1, x.numel()))


def _optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    for cls, name in (
        (AdaX, "AdaX"),
        (AdamX, "AdamX"),
        (Lion, "Lion"),
        (SophiaG, "SophiaG"),
        (torch.optim.RAdam, "RAdam"),
        (torch.optim.SGD, "SGD"),
    ):
        if isinstance(optimizer, cls):
            return name
    return type(optimizer).__name__


def _step_count(state: dict[str, Any]) -> float | None:
    step = state.get("step")
    if step is None:
        return None
    return float(step.item()) if isinstance(step, torch.Tensor) else float(step)


class OptimTelemetry:
    """Statistics of ``optimizer``'s state and update per param group, every ``every`` steps.

    Usage per training step t (1-based, the step about to be taken)::

        if telemetry.due(t): telemetry.snapshot()
        optimizer.step()
        if telemetry.due(t): rows = telemetry.collect(t)   # list of dicts, OPTIM_COLUMNS
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        every: int,
        step_eps: float = 1e-3,
        max_quantile_elems: int = 1 << 24,
    ) -> None:
        if every < 1:
            raise ValueError(f"optim_stats_every={every} must be >= 1 (0 turns telemetry off: build none).")
        if not step_eps > 0:
            raise ValueError(f"optim_stats_eps={step_eps} must be positive (e.g. 1e-3 of the learning rate).")
        self.optimizer, self.every, self.step_eps = optimizer, int(every), float(step_eps)
        self.max_quantile_elems = int(max_quantile_elems)
        self.kind = _optimizer_kind(optimizer)
        self._before: list[list[torch.Tensor]] | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    @torch.no_grad()
    def snapshot(self) -> None:
        """Copy every parameter (on its device) before the step whose update ``collect`` measures."""
        self._before = [[p.detach().clone() for p in g["params"]] for g in self.optimizer.param_groups]

    # ------------------------------------------------------------------ per optimizer

    def _rates(self, group: dict[str, Any], t: float | None) -> tuple[float, float]:
        kind = self.kind
        if kind in ("AdamX", "AdaX", "RAdam") and t is None:
            return _NAN, _NAN
        if kind == "AdamX":
            b1, b2 = group["betas"]
            return schedules.beta1_hat(t, b1), schedules.BETA2_SCHEDULES[group["beta2_schedule"]](t, b2)
        if kind == "AdaX":
            b1, b2 = group["betas"]
            return float(b1), 1.0 - b2 / math.expm1(t * math.log1p(b2))
        if kind == "RAdam":
            b1, b2 = group["betas"]
            return schedules.beta1_hat(t, b1), schedules.beta2_hat_adam(t, b2)
        if kind == "SGD":
            return float(group.get("momentum", 0.0)), _NAN
        if kind == "Lion":
            return float(group["betas"][1]), _NAN
        if kind == "SophiaG":
            return float(group["betas"][0]), _NAN
        return _NAN, _NAN

    def _moments(
        self, group: dict[str, Any], p: torch.Tensor, t: float | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        """(m_hat, v_hat, eps) of one parameter, as the update uses them; None where there is none."""
        state = self.optimizer.state.get(p) or {}
        kind = self.kind
        if kind in ("AdamX", "AdaX") and "exp_avg" in state:
            m = exact_moment(state["exp_avg"], float(state.get("exp_avg_scale", 1.0)))
            v = exact_moment(state["exp_avg_sq"], float(state.get("exp_avg_sq_scale", 1.0)))
            eps = float(group["eps"])
            if kind == "AdamX":
                m = m / -math.expm1(t * math.log1p(group["betas"][0] - 1.0)) if group["betas"][0] else m
            else:  # AdaX's eps sits on the unnormalised sqrt(v): relative to sqrt(v_hat) it shrinks
                eps = eps / math.sqrt(math.expm1(t * math.log1p(group["betas"][1])))
            return m, v, eps
        if kind == "RAdam" and "exp_avg" in state:
            b1, b2 = group["betas"]
            m = state["exp_avg"] / (1.0 - b1**t)
            v = state["exp_avg_sq"] / (1.0 - b2**t)
            return m, v, float(group["eps"])
        if kind == "SGD":
            return state.get("momentum_buffer"), None, _NAN
        if kind in ("Lion", "SophiaG"):
            return state.get("exp_avg"), None, _NAN
        return None, None, _NAN

    def _decoupled(self, group: dict[str, Any]) -> bool:
        if self.kind == "SGD":
            return False
        if self.kind == "RAdam":
            return bool(group.get("decoupled_weight_decay", False))
        return True

    # ------------------------------------------------------------------ the rows

    @torch.no_grad()
    def collect(self, step: int) -> list[dict[str, Any]]:
        """One row per param group for the step just taken (``snapshot`` must have run before it)."""
        if self._before is None:
            raise RuntimeError(
                "OptimTelemetry.collect() needs snapshot() before the optimizer step it measures."
            )
        before_all, self._before = self._before, None
        meta: list[dict[str, Any]] = []
        numbers: list[torch.Tensor] = []
        for index, (group, before) in enumerate(zip(self.optimizer.param_groups, before_all, strict=True)):
            params = list(group["params"])
            if not params:
                continue
            lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
            # the step count of the first parameter with state (a frozen first parameter has none)
            t = next((c for c in (_step_count(self.optimizer.state.get(p) or {}) for p in params) if c), None)
            beta1_hat, beta2_hat = self._rates(group, t)
            device = params[0].device
            nan = torch.tensor(_NAN, dtype=torch.float64, device=device)

            ms, vs, eps = [], [], _NAN
            for p in params:
                m, v, eps = self._moments(group, p, t)
                if m is not None:
                    ms.append(m)
                if v is not None:
                    vs.append(v)
            have_m = bool(ms)  # over the parameters that have state (a frozen one has none)
            have_v = bool(vs) and len(vs) == len(ms)
            sample = 0
            if have_v:
                sqrt_v = _flat(vs).clamp_min(0).sqrt()
                qv, sample = _quantiles(sqrt_v, self.max_quantile_elems)
            else:
                qv = nan.repeat(len(QUANTILES))
            if have_m:
                m_abs = _flat(ms).abs()
                qm, sample = _quantiles(m_abs, self.max_quantile_elems)
            else:
                qm = nan.repeat(len(QUANTILES))
            if have_m and have_v:
                ratio, _ = _quantiles(m_abs / (sqrt_v + eps), self.max_quantile_elems)
                ratio_q50 = ratio[1]
            else:
                ratio_q50 = nan

            # float32 vectors (the subtraction of two nearby floats is exact), float64 sums
            theta0 = torch.cat([b.reshape(-1).to(torch.float32) for b in before])
            update = torch.cat(
                [(p.detach() - b).reshape(-1).to(torch.float32) for p, b in zip(params, before, strict=True)]
            )
            decoupled = self._decoupled(group)
            decay = theta0 * (lr * wd) if decoupled else torch.zeros_like(theta0)
            rest = (
                update + decay
            )  # theta1 = theta0 - decay - step: the step without decay is -(update + decay)
            rms, weight_rms = _rms(update), _rms(theta0)
            decay_rms, rest_rms = _rms(decay), _rms(rest)
            share = decay_rms / (decay_rms + rest_rms) if decoupled else nan
            below = (rest.abs() < self.step_eps * lr).sum(dtype=torch.float64) / rest.numel()
            row_numbers = torch.stack(
                [
                    *qv.to(torch.float64), *qm.to(torch.float64), ratio_q50.to(torch.float64),
                    rms / lr if lr > 0 else nan, rms / weight_rms, share, below,
                ]
            )  # fmt: skip
            numbers.append(row_numbers)
            meta.append(
                {
                    "step": int(step),
                    "group": index,
                    "optimizer": self.kind,
                    "numel": int(theta0.numel()),
                    "lr": lr,
                    "weight_decay": wd,
                    "beta1_hat": beta1_hat,
                    "beta2_hat": beta2_hat,
                    "step_eps": self.step_eps,
                    "quantile_sample": sample,
                }
            )
        if not numbers:
            return []
        same_device = len({n.device for n in numbers}) == 1
        stacked = torch.stack(numbers) if same_device else torch.stack([n.cpu() for n in numbers])
        values = stacked.tolist()  # one host transfer (one per device when groups live on several)
        names = [
            "sqrt_v_q10", "sqrt_v_q50", "sqrt_v_q90", "m_abs_q10", "m_abs_q50", "m_abs_q90", "ratio_q50",
            "update_rms_over_lr", "update_rms_over_weight_rms", "decay_share", "frac_step_below_eps",
        ]  # fmt: skip
        rows = []
        for info, vals in zip(meta, values, strict=True):
            row = {**info, **dict(zip(names, vals, strict=True))}
            rows.append({key: _cell(row[key]) for key in OPTIM_COLUMNS})
        return rows


def _cell(value: Any) -> Any:
    """A CSV cell: NaN is blank (not applicable), floats at full precision."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
