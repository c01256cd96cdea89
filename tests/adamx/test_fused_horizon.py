"""The fused path at any horizon (issue 23, item 5): the beta2 handed to torch's fused kernel has a floor on
every device. On CUDA (and for float64 moments on CPU) the kernel multiplies in double with the beta as given;
without the floor, once AdamX's w = 1 - beta2_hat_t < 2^-54, 1 - w is 1.0, the kernel's bias correction
1 - beta2^step is 0 and the step freezes (v/0 = inf) or turns entries with v = 0 into NaN (0/0).

The CUDA branch's arithmetic runs here on CPU twice: the host scalars of every step up to 10^6 (and at the
analytic t where w underflows) against the kernel's double formula, and the real fused kernel on float64
parameters (which, like CUDA, keeps beta in double: ``kernel_rounds_beta`` is False) stepped across that t
and at t = 10^6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamx
from adamx._adaptive import StepScalars, fused_kernel_scalars, kernel_rounds_beta
from adamx.schedules import one_minus_beta2_hat_adamx

pytestmark = pytest.mark.usefixtures("one_thread")

_HUGE_STEP = 1e30  # the step count the fused path hands the kernel


def _underflow_t(beta2: float) -> int:
    """The first t at which 1 - w(t) == 1.0 in double (w decreases in t): bisection on the schedule."""
    lo, hi = 1, 10**9
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 1.0 - one_minus_beta2_hat_adamx(float(mid), beta2) == 1.0:
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("beta2", [0.9, 0.99])
def test_cuda_branch_scalars_keep_a_nonzero_bias_correction_to_a_million_steps(beta2) -> None:
    t_star = _underflow_t(beta2)
    assert 1_000 < t_star < 1_000_000  # the failure is inside a real run's horizon
    steps = np.unique(np.concatenate([np.geomspace(1, 1e6, 3000).round(), np.arange(t_star - 3, t_star + 4)]))
    m_scale = v_scale = carry = 1.0
    for t in steps:
        t = float(t)
        s = StepScalars(
            decay=1.0 - 1e-5, beta1=0.9, w=one_minus_beta2_hat_adamx(t, beta2), step_size=1e-3, eps=1e-8
        )
        kw, m_scale, v_scale, carry, _ = fused_kernel_scalars(s, 0.9, m_scale, v_scale, carry, rounds=False)
        bias_correction2 = 1.0 - kw["beta2"] ** _HUGE_STEP  # the kernel's formula, in double as on CUDA
        assert bias_correction2 == 1.0, f"t = {t:.0f}: the kernel's bias correction is {bias_correction2}"
        assert 1.0 - kw["beta2"] <= max(2 * s.w, 2e-15)  # the floor adds no more than it must


def _run_fused_float64(start_step: int, steps: int, beta2: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Fused AdamX on float64 parameters (the kernel keeps beta2 in double, as on CUDA) from ``start_step``:
    moments warmed by 3 steps, the step counter then set to ``start_step``; a third of the gradient entries are
    always 0, so their v stays 0 (the 0/0 of a zero bias correction)."""
    assert not kernel_rounds_beta(torch.device("cpu"), torch.float64)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(300, generator=g, dtype=torch.float64, requires_grad=True)
    mask = (torch.arange(300) % 3 != 0).double()
    opt = adamx.AdamX([p], betas=(0.9, beta2), fused=True)
    history = []
    for i in range(3 + steps):
        if i == 3:
            opt.state[p]["step"].fill_(float(start_step))
        p.grad = torch.randn(300, generator=g, dtype=torch.float64) * mask
        opt.step()
        history.append(p.detach().clone())
    return opt.state[p]["exp_avg_sq"], history


@pytest.mark.parametrize("beta2,start", [(0.9, "t*"), (0.99, "t*"), (0.99, 10**6)])
def test_fused_kernel_in_double_neither_freezes_nor_nans_past_the_underflow(beta2, start) -> None:
    start_step = _underflow_t(beta2) - 3 if start == "t*" else start - 5
    v, history = _run_fused_float64(start_step, 6, beta2)
    assert (v == 0).any(), "no entry with v = 0: the NaN case is not exercised"
    for before, after in zip(history[2:], history[3:]):
        assert torch.isfinite(after).all(), "NaN or inf in the parameters"
        moved = (after - before)[torch.arange(300) % 3 != 0]
        assert (moved != 0).all(), "the step froze"
