"""The one update rule AdamX, the "Adam + beta2_hat_t" family and AdaX share, on three paths.

Per step the caller supplies float64 scalars and every path computes, per parameter,

    theta <- theta * (1 - lr * wd)
    m     <- lerp(m, g, 1 - beta1)                      (Adam's raw first moment)
    v     <- lerp(v, g*g, w)                            (w = 1 - beta2_hat_t, possibly ~1e-7)
    theta <- theta - step_size * m / (sqrt(v) + eps)

AdamX's m_t of Algorithm 1 (beta1_hat_t form) equals m / (1 - beta1^t), so the caller folds 1/(1 - beta1^t)
into ``step_size``. The fused path maps the step onto torch's own fused AdamW kernel, whose float32 beta2
cannot hold 1 - 1e-7: ``accumulating_beta2`` keeps v's decay exact on the host instead, and a decay carry
keeps the weight decay exact; what remains is float32 rounding of the accumulated v, which late in an AdamX
run drifts by ~5e-9 relative per step (foreach/single: ~1e-5 in total, no drift).

Three update-rule functions, as torch's adamw.py: ``single_tensor_step``, ``foreach_step`` and
``fused_step``. Compiled and capturable steps are a branch inside the first two (``DeviceScalars``): the
step-dependent scalars are 0-d tensors, one per parameter, computed on the device from the ``step`` tensors,
and under torch.compile lr, weight decay and beta1 are tensors too, so Dynamo guards on nothing a step or a
scheduler changes and a CUDA graph can replay the step. They agree with the host-scalar branch to float32
rounding, not bit for bit (v + w (g^2 - v) and m / (sqrt(v) + eps) * (-step) as separate ops instead of lerp_
and addcdiv_; docs/benchmarks.md, issue 23). The fused kernel cannot take tensor betas (its betas are host
floats), so a fused group runs the foreach branch there.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch

from ._base import LOW_PRECISION, copy_back, group_by_device_and_dtype, working_copies
from .state import set_fused_state

# A step count so large that the kernel's bias corrections 1 - beta^step are exactly 1 in double.
_HUGE_STEP = 1e30
# Below this, 1 - x rounds too close to 1 in double for the kernel's bias correction; see kernel_beta.
_MIN_KERNEL_WEIGHT = 1e-15


def kernel_beta(x: float) -> float:
    """The beta handed to torch's fused kernel for an EMA weight x = 1 - beta, on every device and dtype.

    The kernel divides by its bias correction 1 - beta^step (step = 1e30 here, meant to make it 1). Once x falls
    below 2^-54 (AdamX's 1 - beta2_hat_t does: from t = 3,121 with beta2 = 0.9, 280,834 with 0.99), 1 - x is
    1.0 in double, the correction is 0 and the update inf/inf or 0/0: the step freezes and entries with v = 0
    become NaN. The floor keeps 1 - x < 1 (pow(1 - 1e-15, 1e30) = 0, correction 1); the weight it adds,
    <= 1e-15 g^2, is below float32's resolution of v (and float64's unless g^2 > 0.1 v)."""
    return 1.0 - max(x, _MIN_KERNEL_WEIGHT)


@dataclass(frozen=True)
class StepScalars:
    """Per-step float64 scalars of the shared update rule."""

    decay: float  # 1 - lr * weight_decay
    beta1: float
    w: float  # 1 - beta2_hat_t
    step_size: float
    eps: float


def _round_f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


@dataclass(frozen=True)
class DeviceScalars:
    """Per-step scalars for the compiled/capturable paths. ``w``, ``neg_step_size`` and ``eps`` are 0-d tensors
    of the moments' dtype on the parameters' device, one per parameter (parameters may be at different steps).
    ``decay_minus_one`` (None without weight decay) and ``one_minus_beta1`` are 0-d tensors under
    ``torch.compile`` (graph inputs: a scheduler changing lr or beta1 neither recompiles nor is ignored) and host
    floats in eager capturable steps (a CUDA graph then replays the values it was captured with, as torch's)."""

    decay_minus_one: float | torch.Tensor | None  # (1 - lr * weight_decay) - 1
    one_minus_beta1: float | torch.Tensor
    w: list[torch.Tensor]
    neg_step_size: list[torch.Tensor]
    eps: list[torch.Tensor]


def _decay_(params: list[torch.Tensor], decay_minus_one: float | torch.Tensor | None) -> None:
    """theta <- theta + (decay - 1) theta: one rounding of theta * decay (mul_ would round decay to float32)."""
    if decay_minus_one is None:
        return
    if isinstance(decay_minus_one, torch.Tensor):
        torch._foreach_add_(params, torch._foreach_mul(params, decay_minus_one))
    else:
        torch._foreach_add_(params, params, alpha=decay_minus_one)


# ---- single tensor ------------------------------------------------------------------------------------


def single_tensor_step(params, grads, exp_avgs, exp_avg_sqs, s: StepScalars | DeviceScalars) -> None:
    """The rule one tensor at a time. Host ``StepScalars`` (eager) or ``DeviceScalars`` (compiled or
    capturable: every per-step value stays on the device), as torch's ``capturable`` branch."""
    work_p, work_g, write_back = working_copies(params, grads)
    if isinstance(s, DeviceScalars):
        _decay_(work_p, s.decay_minus_one)
        for p, g, m, v, w, nss, eps in zip(
            work_p, work_g, exp_avgs, exp_avg_sqs, s.w, s.neg_step_size, s.eps
        ):
            m.lerp_(g, s.one_minus_beta1)
            v.add_((g * g).sub_(v).mul_(w))  # lerp(v, g^2, w), spelled so that inductor fuses it
            p.add_(m.div(v.sqrt().add_(eps)).mul_(nss))
    else:
        for p, g, m, v in zip(work_p, work_g, exp_avgs, exp_avg_sqs):
            if s.decay != 1.0:  # one rounding of theta * decay (mul_ would round decay to float32)
                p.add_(p, alpha=s.decay - 1.0)
            m.lerp_(g, 1.0 - s.beta1)
            v.lerp_(g * g, s.w)
            p.addcdiv_(m, v.sqrt().add_(s.eps), value=-s.step_size)
    copy_back(write_back)


# ---- foreach ------------------------------------------------------------------------------------------


_CHUNK_NUMEL = 1 << 20


def _chunks(lists: list[list[torch.Tensor]]):
    """Runs of ~1M elements: the foreach temporaries (g*g, sqrt(v)) then stay small enough for the allocator to
    reuse, instead of a fresh, page-faulting buffer the size of the whole model on every step."""
    start, total = 0, 0
    for i, t in enumerate(lists[0]):
        total += t.numel()
        if total >= _CHUNK_NUMEL:
            yield [lst[start : i + 1] for lst in lists]
            start, total = i + 1, 0
    if start < len(lists[0]):
        yield [lst[start:] for lst in lists]


def foreach_step(params, grads, exp_avgs, exp_avg_sqs, s: StepScalars | DeviceScalars) -> None:
    """The rule on foreach kernels. Host ``StepScalars`` (eager) or ``DeviceScalars`` (compiled or capturable:
    every per-step value stays on the device; the caller has bucketed by device and dtype)."""
    work_p, work_g, write_back = working_copies(params, grads)
    if isinstance(s, DeviceScalars):
        ps, gs, ms, vs = work_p, work_g, exp_avgs, exp_avg_sqs
        _decay_(ps, s.decay_minus_one)
        if isinstance(
            s.one_minus_beta1, torch.Tensor
        ):  # m <- m + (1 - beta1)(g - m): lerp's formula, w < 0.5
            delta = torch._foreach_sub(gs, ms)
            torch._foreach_mul_(delta, s.one_minus_beta1)
            torch._foreach_add_(ms, delta)
        else:
            torch._foreach_lerp_(ms, gs, s.one_minus_beta1)
        # v <- lerp(v, g^2, w) as v + w (g^2 - v): inductor has no lowering for _foreach_lerp_ with tensor
        # weights (it would run that op unfused, between two kernels); for w < 0.5 this is lerp's own formula
        delta = torch._foreach_mul(gs, gs)
        torch._foreach_sub_(delta, vs)
        torch._foreach_mul_(delta, s.w)
        torch._foreach_add_(vs, delta)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, s.eps)
        update = torch._foreach_div(ms, denom)
        torch._foreach_mul_(update, s.neg_step_size)
        torch._foreach_add_(ps, update)
        copy_back(write_back)
        return
    for bucket in group_by_device_and_dtype([work_p, work_g, exp_avgs, exp_avg_sqs]):
        for ps, gs, ms, vs in _chunks(bucket) if bucket[0][0].device.type == "cpu" else [bucket]:
            if s.decay != 1.0:
                torch._foreach_add_(ps, ps, alpha=s.decay - 1.0)
            torch._foreach_lerp_(ms, gs, 1.0 - s.beta1)
            gsq = torch._foreach_mul(gs, gs)
            torch._foreach_lerp_(vs, gsq, s.w)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, s.eps)
            torch._foreach_addcdiv_(ps, ms, denom, -s.step_size)
    copy_back(write_back)


# ---- fused: torch's fused AdamW kernel with adjusted scalars -------------------------------------------

_KERNEL_ROUNDS_BETA: dict[tuple[str, torch.dtype], bool] = {}


def kernel_rounds_beta(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fused kernel on this device type multiplies moments of this dtype by float32(beta) (True)
    or by the beta in the moments' own precision (False). Measured once per (device type, dtype) on a tiny
    input: CPU kernels round for float32 (float32 opmath) but keep beta exact for float64."""
    key = (device.type, dtype)
    if key not in _KERNEL_ROUNDS_BETA:
        beta = 1.0 - 1.3e-7
        v0 = torch.linspace(1.0, 3.0, 257, dtype=dtype, device=device)
        p, g, m, v = torch.zeros_like(v0), torch.zeros_like(v0), torch.zeros_like(v0), v0.clone()
        step = torch.tensor(_HUGE_STEP, dtype=torch.float32, device=device)
        torch._fused_adamw_(
            [p], [g], [m], [v], [], [step], lr=0.0, beta1=0.9, beta2=beta, weight_decay=0.0, eps=1.0,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip
        rounded = (v0.double() * _round_f32(beta)).to(dtype)
        exact = (v0.double() * beta).to(dtype)
        if torch.equal(v, exact):
            _KERNEL_ROUNDS_BETA[key] = False
        elif torch.equal(v, rounded):
            _KERNEL_ROUNDS_BETA[key] = True
        else:
            raise RuntimeError(
                f"torch's fused AdamW kernel on {device.type} ({dtype}) rounds beta in an unexpected way; "
                "use fused=False (the foreach path) with this torch build."
            )
    return _KERNEL_ROUNDS_BETA[key]


def tracked_ema_beta(decay: float, weight: float, scale: float, rounds: bool) -> tuple[float, float]:
    """The beta to hand the kernel so that its EMA, run on a stored moment ``scale * x``, equals the exact
    EMA x <- decay * x + weight * y up to a new, host-tracked scale. Returns (beta_for_kernel, new_scale).

    The kernel computes x' <- D x' + C y with D = float32(beta) (on CPU) and C = float32(1 - beta). Passing
    beta = 1 - scale * weight keeps C = new_scale * weight to float32 rounding, and new_scale = D * scale / decay
    records exactly the part of the decay that float32(beta) gets wrong, so the rounding never accumulates.
    """
    if decay == 0.0:  # the moment is overwritten: x = y
        return 0.0, 1.0
    beta = kernel_beta(scale * weight)
    d = _round_f32(beta) if rounds else beta
    new_scale = d * scale / decay
    beta2 = kernel_beta(new_scale * weight)
    d2 = _round_f32(beta2) if rounds else beta2
    if d2 == d:  # a self-consistent choice: C matches the new scale to the last bit we can control
        return beta2, new_scale
    return beta, new_scale


# x >= 2^-28 keeps the double 1 - (1 - x) the kernel forms within 3e-8 of x.
_X_LOW, _X_HIGH, _X_TARGET = 2.0**-28, 2.0**-25, 2.0**-26.5
_MAX_V_SCALE = 2.0**60


def accumulating_beta2(w: float, scale: float) -> tuple[float, float, float]:
    """Kernel beta2 for the second moment in accumulate form. Returns (beta_for_kernel, new_scale, rescale).

    The stored v' = scale * v is updated by the kernel as v' <- D v' + C g^2 with D = float32(beta) and
    C = float32(1 - beta). Multiplying by D != 1 would round every step by up to half an ulp of v', and late in
    an AdamX run, where v changes by ~1 ulp per step, that rounding is biased (same mantissa, same direction).
    So the kernel gets beta = 1 - x with x <= 2^-25, which float32 rounds to D = 1 exactly: v' only
    accumulates C g^2 with C = float32(x), and the decay is carried by the host: new_scale = scale / beta2_hat_t,
    x = new_scale * w. x is kept in [2^-28, 2^-25] by rescaling v' with a power of two (exact; returned as
    ``rescale``, 1.0 on almost every step: early x stays put, late it halves every ~7k AdamX steps).
    """
    if w >= 1.0:  # beta2_hat_t = 0: v is overwritten with g^2
        return 1.0 - _X_TARGET, _X_TARGET, 0.0
    new_scale = scale / (1.0 - w)
    x = new_scale * w
    rescale = 1.0
    if x > _X_HIGH or (x < _X_LOW and new_scale < _MAX_V_SCALE):
        rescale = 2.0 ** round(math.log2(_X_TARGET / x)) if x > 0.0 else 2.0**30
        rescale = min(rescale, _MAX_V_SCALE / new_scale) if rescale > 1.0 else rescale
        rescale = 2.0 ** math.floor(math.log2(rescale))
        new_scale *= rescale
        x = new_scale * w
    return kernel_beta(x), new_scale, rescale


def fused_kernel_scalars(
    s: StepScalars, beta1_true: float, m_scale: float, v_scale: float, carry: float, rounds: bool
) -> tuple[dict[str, float], float, float, float, float]:
    """Kernel arguments for one step of the shared rule, the new moment scales (stored m = a * m_exact,
    stored v = b * v_exact), the new decay carry and the power of two to multiply the stored v by first.
    With the huge step count both bias corrections are 1, so the kernel computes
    theta * (1 - lr_k wd_k) - lr_k * (a m) / (sqrt(b v) + eps_k), which equals the rule when
    lr_k = step_size sqrt(b) / a, eps_k = eps sqrt(b) and lr_k wd_k = 1 - decay."""
    beta1_k, a = tracked_ema_beta(beta1_true, 1.0 - beta1_true, m_scale, rounds)
    if rounds:
        beta2_k, b, rescale = accumulating_beta2(s.w, v_scale)
    else:  # a kernel that multiplies in double needs no tricks
        beta2_k, b, rescale = kernel_beta(s.w), 1.0, 1.0 / v_scale if v_scale != 1.0 else 1.0
    sqrt_b = math.sqrt(b)
    lr_k = s.step_size * sqrt_b / a
    # The kernel multiplies theta by float32(1 - lr_k wd_k); ``carry`` = exact / applied cumulative decay, so
    # choosing each step's float32 factor near decay * carry keeps the product exact (error diffusion).
    wd_k = 0.0
    if lr_k > 0.0 and (s.decay != 1.0 or carry != 1.0):
        target = s.decay * carry
        applied = _round_f32(target) if rounds else target
        wd_k = (1.0 - applied) / lr_k
        carry = target / applied
    kw = dict(lr=lr_k, beta1=beta1_k, beta2=beta2_k, weight_decay=wd_k, eps=s.eps * sqrt_b)
    return kw, a, b, carry, rescale


_HUGE_STEPS: dict[torch.device, torch.Tensor] = {}


def _huge_step(device: torch.device) -> torch.Tensor:
    if device not in _HUGE_STEPS:
        _HUGE_STEPS[device] = torch.tensor(_HUGE_STEP, dtype=torch.float32, device=device)
    return _HUGE_STEPS[device]


def fused_step(params, grads, states, s: StepScalars, m_scale: float, v_scale: float, carry: float) -> None:
    """One step on torch's fused AdamW kernel for parameters that share one (m_scale, v_scale, decay carry)
    (stored moments = scale * exact moments): one kernel call per (device, dtype), the new scales and carry
    written into each parameter's state. No per-parameter work but list building."""
    by_device = torch._C._group_tensors_by_device_and_dtype([params], True)
    for (device, dtype), ((ps,), idx) in by_device.items():
        if len(by_device) == 1:
            gs, sts = grads, states
        else:
            gs, sts = [grads[i] for i in idx], [states[i] for i in idx]
        ms, vs = [st["exp_avg"] for st in sts], [st["exp_avg_sq"] for st in sts]
        rounds = kernel_rounds_beta(device, ms[0].dtype)
        kw, a, b, new_carry, rescale = fused_kernel_scalars(s, s.beta1, m_scale, v_scale, carry, rounds)
        low = dtype in LOW_PRECISION
        work_p = [p.float() for p in ps] if low else ps
        if low:
            work_g = [g.float() for g in gs]
        else:
            work_g = [g if g.dtype == dtype else g.to(dtype) for g in gs]
        if rescale != 1.0:
            torch._foreach_mul_(vs, rescale)  # a power of two (or 0 when v is overwritten): exact
        torch._fused_adamw_(
            work_p, work_g, ms, vs, [], [_huge_step(device)] * len(ps), **kw,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip
        if low:
            torch._foreach_copy_(ps, work_p)
        set_fused_state(sts, a, b, new_carry)
