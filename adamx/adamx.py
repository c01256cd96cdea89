"""AdamX (Algorithm 1 of the paper) and the "Adam + beta2_hat_t" family of the ablation (Tables 7-10).

    beta1_hat_t = (beta1 - beta1^t)/(1 - beta1^t),  beta2_hat_t = schedule(t, betas[1])
    m <- beta1_hat_t m + (1 - beta1_hat_t) g,        v <- beta2_hat_t v + (1 - beta2_hat_t) g^2
    theta <- theta (1 - lr wd) - lr m / (sqrt(v) + eps)

State per parameter: ``step`` (a float32 0-d tensor as in torch.optim: on the CPU, or on the parameter's
device with ``capturable=True``; the plain ints of older checkpoints are accepted), ``exp_avg`` (Adam's raw
first moment; Algorithm 1's m_t is exp_avg / (1 - beta1^t)), ``exp_avg_sq`` (Algorithm 1's v_t itself,
already unbiased), and
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
from ._adaptive import (
    DeviceScalars,
    StepScalars,
    foreach_step,
    fused_step,
    single_tensor_step,
)
from ._base import (
    MomentOptimizer,
    as_betas,
    check_beta,
    check_nonnegative,
    compiled_split_groups,
    compiling,
    dense_grad,
    group_by_device_and_dtype,
    zeros_moment,
)
from .paths import check_fused, group_path
from .state import (
    canonical_state_dict,
    fused_key,
    init_fused_state,
    internal_state_dict,
    live_state_in_place,
    make_exact,
)


def _bias_correction1(t: Any, beta1: Any) -> Any:
    """1 - beta1^t, computed without cancellation (t a number or a float64 tensor; beta1 a float, or a 0-d
    tensor under torch.compile: log1p(-1) = -inf makes beta1 = 0 give 1 there without a branch)."""
    if isinstance(beta1, torch.Tensor):
        return -torch.expm1(t * torch.log1p(beta1 - 1.0))
    if isinstance(t, torch.Tensor):
        return torch.ones_like(t) if beta1 == 0.0 else -torch.expm1(t * math.log1p(beta1 - 1.0))
    return 1.0 if beta1 == 0.0 else -math.expm1(t * math.log1p(beta1 - 1.0))


_STATIC_KEYS = ("params", "foreach", "fused", "capturable", "beta2_schedule")


def _split_group(group: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    """(lr, weight decay, beta1, eps): what a scheduler may change, in the order ``_device_step`` reads them;
    and the rest of the group, with beta2 (the schedule's parameter) and whether weight decay is on."""
    static = {
        k: group[k] for k in _STATIC_KEYS if k in group
    }  # not the keys schedulers add (initial_lr, max_momentum...)
    static["beta2"] = group["betas"][1]
    static["has_decay"] = group["weight_decay"] != 0
    return [group["lr"], group["weight_decay"], group["betas"][0], group["eps"]], static


def _scalar_dtype(device: torch.device) -> torch.dtype:
    """The dtype of on-device scalar math: float64 where the device has it."""
    return torch.float32 if device.type == "mps" else torch.float64


class AdaptiveMomentOptimizer(MomentOptimizer):
    """Shared machinery of AdamX and AdaX: state, path selection, bucketing by step. Subclasses give the
    per-step scalars of the rule in ``adamx._adaptive``: as host floats (``_scalars``, eager steps) and as
    float64 tensors of the steps (``_device_scalars``, compiled and capturable steps)."""

    _moment_keys = ("exp_avg", "exp_avg_sq")
    _label = "AdamX"
    _optional_group_keys: dict[str, Any] = {
        "foreach": None,
        "fused": None,
        "capturable": False,
    }  # issue 17: filled when missing

    def _scalars(self, group: dict[str, Any], t: int) -> StepScalars:
        raise NotImplementedError

    def _device_scalars(
        self, group: dict[str, Any], t: torch.Tensor, lr: Any, beta1: Any, eps: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w, step_size, eps) per element of the float64 step vector ``t``; lr, beta1 and eps are floats or
        0-d float64 tensors on t's device."""
        raise NotImplementedError

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # fills missing group keys (issue 17: the constructor's values)
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st:
                    st["step"] = _step_tensor(st["step"], p, group["capturable"])

    # issue 17: one state_dict layout whatever the path (adamx/state.py, docs/optimizer_state.md)
    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict with the exact moments in the layout of docs/optimizer_state.md on every path."""
        return canonical_state_dict(super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for saved in state_dict["param_groups"]:  # a bad value names itself before anything is loaded
            self._check_group(self._with_defaults(saved))
        super().load_state_dict(internal_state_dict(state_dict))

    @staticmethod
    def _path(group: dict[str, Any], params: list[torch.Tensor]) -> str:
        return group_path(group, params)

    def _state(self, p: torch.Tensor, group: dict[str, Any], exact_scales: bool) -> dict[str, Any]:
        """The parameter's state, created on first use; ``step`` as a tensor where the group needs it;
        moments divided by their scales (made exact) unless the fused kernel keeps using them."""
        state = self.state[p]
        if "fused_exp_avg_scale" in state:  # an exported state loaded straight into self.state (ZeRO)
            live_state_in_place(state)
        if len(state) == 0:
            state["step"] = _step_tensor(0, p, group["capturable"])
            state["exp_avg"] = zeros_moment(p)
            state["exp_avg_sq"] = zeros_moment(p)
            init_fused_state(state)
        step = state["step"]
        on_device = group["capturable"]
        if not isinstance(step, torch.Tensor) or step.device != (p.device if on_device else _CPU):
            state["step"] = _step_tensor(step, p, on_device)
        if exact_scales:
            make_exact(state)
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step; ``closure`` re-evaluates the loss (run with grad enabled) and its value is returned."""
        loss = self._run_closure(closure)
        if compiling():  # lr, weight decay, beta1 and eps enter the graph as tensors
            self._step_groups(compiled_split_groups(self, _split_group), compiled=True)
        else:
            self._step_groups([(group, None) for group in self.param_groups], compiled=False)
        return loss

    @torch.no_grad()
    def _step_groups(self, groups: list[tuple[dict[str, Any], torch.Tensor | None]], compiled: bool) -> None:
        """``groups``: (param group, None) in eager steps; (the group without its hyperparameters, them as a
        float64 tensor) in compiled ones (``adamx._base.compiled_split_groups``)."""
        work = []  # every gradient is checked before any state changes: a refused step changes nothing
        for group, hyper in groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads) or any(p.is_complex() for p in params):
                grads = [dense_grad(p, self._label) for p in params]  # raises, naming the parameter
            work.append((group, hyper, params, grads))
        for group, hyper, params, grads in work:
            if not params:
                continue
            if compiled:
                self._device_step(group, params, grads, hyper)
            elif group["capturable"]:
                values, static = _split_group(group)
                self._device_step(static, params, grads, values)
            else:
                self._host_step(group, params, grads)

    def _host_step(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """Eager step: host float64 scalars per distinct step count (and moment scales on the fused path)."""
        path = self._path(group, params)
        fused = path == "fused"
        states = self._states(params, group, exact_scales=not fused)
        steps = [st["step"] for st in states]
        torch._foreach_add_(steps, 1.0)
        ts = [int(step.item()) for step in steps]  # CPU tensors: no device sync
        if fused:
            self._fused_host_step(group, params, grads, states, ts)
            return
        t0 = ts[0]
        if all(t == t0 for t in ts):  # the common case: one step count, one bucket
            buckets = {
                t0: (params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states])
            }
        else:
            buckets = {}
            for p, grad, state, t in zip(params, grads, states, ts):
                bucket = buckets.setdefault(t, ([], [], [], []))
                bucket[0].append(p)
                bucket[1].append(grad)
                bucket[2].append(state["exp_avg"])
                bucket[3].append(state["exp_avg_sq"])
        run = foreach_step if path == "foreach" else single_tensor_step
        for t, (ps, gs, ms, vs) in buckets.items():
            run(ps, gs, ms, vs, self._scalars(group, t))

    def _states(self, params: list[torch.Tensor], group: dict[str, Any], exact_scales: bool) -> list[dict]:
        """``_state`` of every parameter, with a fast check for the state an eager step left behind."""
        state_map, out = self.state, []
        for p in params:
            st = state_map[p]
            step = st.get("step")
            if step.__class__ is not torch.Tensor or not step.is_cpu or exact_scales or "fused_exp_avg" in st:
                st = self._state(p, group, exact_scales)
            out.append(st)
        return out

    def _fused_host_step(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, Any]],
        ts: list[int],
    ) -> None:
        """The fused path: one kernel call per (step count, moment scales, decay carry, device, dtype), almost
        always one; the scales and carry (``adamx.state``) are per parameter in the state."""
        keys = [(t, *fused_key(st)) for t, st in zip(ts, states)]
        k0 = keys[0]
        if all(k == k0 for k in keys):
            buckets = {k0: list(range(len(params)))}
        else:
            buckets = {}
            for i, key in enumerate(keys):
                buckets.setdefault(key, []).append(i)
        for (t, a, b, carry), idx in buckets.items():
            scalars = self._scalars(group, t)
            if len(idx) == len(params):
                ps, gs, sts = params, grads, states
            else:
                ps, gs, sts = [params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx]
            fused_step(ps, gs, sts, scalars, a, b, carry)

    def _device_step(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        hyper: torch.Tensor | list[float],
    ) -> None:
        """Compiled or capturable step: per-parameter scalars computed on the device from the step tensors,
        no host sync and nothing that changes per step in Python. ``group`` is ``_split_group``'s static part;
        ``hyper`` holds lr, weight decay, beta1 and eps: a float64 tensor in compiled steps, floats in eager
        capturable ones. A fused group runs the foreach math."""
        path = self._path(group, params)
        states = [self._state(p, group, exact_scales=True) for p in params]
        steps = [st["step"] for st in states]
        torch._foreach_add_(steps, 1.0)
        ms = [st["exp_avg"] for st in states]
        vs = [st["exp_avg_sq"] for st in states]
        # buckets by the moments' (device, dtype): 16-bit parameters step in float32 with float32 moments
        for bm, ps, gs, bv, bsteps in group_by_device_and_dtype([ms, params, grads, vs, steps]):
            device, dtype = bm[0].device, bm[0].dtype
            sdt = _scalar_dtype(device)
            t = torch.stack(bsteps).to(device=device, dtype=sdt)
            if isinstance(hyper, torch.Tensor):
                lr, wd, beta1, eps = hyper.to(device=device, dtype=sdt).unbind(0)
            else:
                lr, wd, beta1, eps = (float(x) for x in hyper)
            w, step_size, eps = self._device_scalars(group, t, lr, beta1, eps)
            decay_minus_one = ((1.0 - lr * wd) - 1.0) if group["has_decay"] else None
            one_minus_beta1 = 1.0 - beta1
            if isinstance(hyper, torch.Tensor):
                decay_minus_one = None if decay_minus_one is None else decay_minus_one.to(dtype)
                one_minus_beta1 = one_minus_beta1.to(dtype)
            scalars = DeviceScalars(
                decay_minus_one=decay_minus_one,
                one_minus_beta1=one_minus_beta1,
                w=list(w.to(dtype).unbind(0)),
                neg_step_size=list((-step_size).to(dtype).unbind(0)),
                eps=list(eps.to(dtype).unbind(0)),
            )
            run = single_tensor_step if path == "single" else foreach_step
            run(ps, gs, bm, bv, scalars)


_CPU = torch.device("cpu")


def _step_tensor(step: Any, p: torch.Tensor, capturable: bool) -> torch.Tensor:
    """``step`` (an int from older checkpoints, or a tensor) as torch.optim keeps it: a float32 0-d tensor,
    on the parameter's device for capturable groups and on the CPU otherwise."""
    device = p.device if capturable else _CPU
    if isinstance(step, torch.Tensor):
        return step.to(device=device, dtype=torch.float32).reshape(())
    return torch.tensor(float(step), dtype=torch.float32, device=device)


def _check_common(group: dict[str, Any], label: str = "AdamX") -> None:
    check_nonnegative("lr", group["lr"])
    check_nonnegative("eps", group["eps"])
    check_nonnegative("weight_decay", group["weight_decay"])
    check_fused(group, label)
    if not isinstance(group["capturable"], bool):
        raise ValueError(f"Invalid capturable: {group['capturable']!r}; pass True or False.")


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
            or a name registered with ``adamx.register_beta2_schedule`` (param groups hold names only, so
            state_dicts load with ``weights_only=True``).
        foreach, fused: the path, as in torch.optim.AdamW. Default: foreach on CUDA, single-tensor elsewhere;
            both are exact to float32 rounding. ``fused=True`` (3-4x faster on CPU) runs torch's fused
            AdamW kernel with adjusted scalars (see ``adamx._adaptive``); late in long runs its float32 v
            drifts by ~5e-9 relative per step (2.7e-5 after 5,000 steps at t = 60k) where foreach stays ~1e-5.
            ``fused="auto"`` (the registry's default): fused where every parameter is on CPU or CUDA in a float
            dtype, foreach elsewhere; an explicit ``foreach`` beside it wins (``adamx.paths``).
        capturable: keep ``step`` on the parameter's device and compute every per-step scalar there (no host
            sync), as torch's ``capturable``: the step can be captured in a CUDA graph. Works on any device.
            Under ``torch.compile`` the step does this whatever the flag, and lr, weight decay, beta1 and eps
            enter the graph as tensors (schedulers neither recompile nor drift); a fused group then runs the
            foreach math (torch's fused kernel takes its betas as host floats).
    """

    _optional_group_keys = {
        "foreach": None,
        "fused": None,
        "capturable": False,
        "beta2_schedule": "adamx",
    }  # issue 17

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        beta2_schedule: str = "adamx",
        foreach: bool | None = None,
        fused: bool | str | None = None,
        capturable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, beta2_schedule=beta2_schedule,
            foreach=foreach, fused=fused, capturable=capturable,
        )  # fmt: skip
        self._check_group(defaults)  # also makes betas a tuple
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        group["betas"] = as_betas(group["betas"])
        _check_common(group)
        _check_schedule(group["beta2_schedule"], group["betas"])

    def _scalars(self, group: dict[str, Any], t: int) -> StepScalars:
        lr = float(group["lr"])
        beta1, beta2 = group["betas"]
        return StepScalars(
            decay=1.0 - lr * float(group["weight_decay"]),
            beta1=beta1,
            w=_one_minus_beta2_hat(group["beta2_schedule"])(t, beta2),
            step_size=lr / _bias_correction1(t, beta1),
            eps=float(group["eps"]),
        )

    def _device_scalars(
        self, group: dict[str, Any], t: torch.Tensor, lr: Any, beta1: Any, eps: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = _one_minus_beta2_hat(group["beta2_schedule"])(t, group["beta2"])
        step_size = lr / _bias_correction1(t, beta1)
        return w, step_size, torch.zeros_like(t) + eps


def _one_minus_beta2_hat(schedule: Any) -> Callable[[Any, float], Any]:
    if not isinstance(schedule, str) or schedule not in schedules.ONE_MINUS_BETA2_SCHEDULES:
        _check_schedule(schedule, (0.9, 0.99))  # raises the sentence that names the value
    return schedules.ONE_MINUS_BETA2_SCHEDULES[schedule]


def _check_schedule(schedule: Any, betas: tuple[float, float]) -> None:
    check_beta(0, betas[0])
    if callable(schedule):
        name = getattr(schedule, "__name__", "fn")
        raise ValueError(
            f"beta2_schedule={schedule!r} is a callable, which cannot be saved in a state_dict loadable with "
            f"weights_only=True; register it by name instead: adamx.register_beta2_schedule('{name}', "
            f"lambda t, beta2: ...) and pass beta2_schedule='{name}'."
        )
    if not isinstance(schedule, str) or schedule not in schedules.BETA2_SCHEDULES:
        raise ValueError(
            f"Unknown beta2_schedule {schedule!r}; choose one of {sorted(schedules.BETA2_SCHEDULES)} "
            "or register your own with adamx.register_beta2_schedule(name, fn)."
        )
    schedules.validate_schedule_parameter(schedule, betas[1])
