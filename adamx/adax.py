"""AdaX-W (Li et al. 2020, github switchablenorms/AdaX), the decoupled-weight-decay form its authors recommend.

The authors' update:

    m <- beta1 m + (1 - beta1) g                 (no bias correction of m)
    v <- (1 + beta2) v + beta2 g^2               (v grows like (1 + beta2)^t)
    theta <- theta - lr wd theta - lr sqrt((1 + beta2)^t - 1) m / (sqrt(v) + eps)

Here v is stored normalised, v_hat = v / ((1 + beta2)^t - 1), which obeys v_hat <- lerp(v_hat, g^2, w) with
w = beta2 / ((1 + beta2)^t - 1) and never overflows (the raw v passes float32's range after ~880k steps with
beta2 = 1e-4). The step is then lr m / (sqrt(v_hat) + eps / sqrt((1 + beta2)^t - 1)), exactly the authors'.

How it differs from "Adam + AdaX's beta2_hat_t" (``AdamX(beta2_schedule="adax")``): the second moment is the
same, but AdaX does not bias-correct m (Adam divides by 1 - beta1^t), and its eps sits on the unnormalised
sqrt(v), i.e. it shrinks as eps / sqrt((1 + beta2)^t - 1) relative to sqrt(v_hat); its default eps is 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ._adaptive import StepScalars
from ._base import as_betas, check_beta
from .adamx import AdaptiveMomentOptimizer, _check_common


class AdaX(AdaptiveMomentOptimizer):
    """AdaX-W: betas = (beta1, beta2) with 0 < beta2 < 1 the long-term-memory rate (1e-4 in the paper).

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v / ((1 + beta2)^t - 1)), and the moment scales of the
    fused path (see ``adamx.AdamX``). Paths: single tensor, foreach, fused and ``capturable``, as in AdamX.

    Defaults: lr 1e-3 and weight_decay 0.01 are the paper's shared Adam/AdaX/AdamX training configuration
    (configs/optimizer/adax.yaml). AdaX-W's authors default to lr 5e-3, weight_decay 5e-2 (``AdaXW`` in
    AdaX.py of github.com/switchablenorms/AdaX, commit e18f35f, and its CIFAR-10 ResNet-20 config); pass
    those to reproduce their setting. Like theirs, betas[1] >= 1 is rejected (and betas[1] = 0, which
    would divide by (1 + 0)^t - 1 = 0).
    """

    _label = "AdaX"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 1e-4),
        eps: float = 1e-12,
        weight_decay: float = 0.01,
        *,
        foreach: bool | None = None,
        fused: bool | str | None = None,
        capturable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, fused=fused,
            capturable=capturable,
        )  # fmt: skip
        self._check_group(defaults)  # also makes betas a tuple
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        group["betas"] = as_betas(group["betas"])
        _check_common(group, "AdaX")
        _check_adax_betas(group["betas"])

    def _scalars(self, group: dict[str, Any], t: int) -> StepScalars:
        lr = float(group["lr"])
        beta1, beta2 = group["betas"]
        bias = math.expm1(t * math.log1p(beta2))  # (1 + beta2)^t - 1
        return StepScalars(
            decay=1.0 - lr * float(group["weight_decay"]),
            beta1=beta1,
            w=beta2 / bias,
            step_size=lr,
            eps=float(group["eps"]) / math.sqrt(bias),
        )

    def _device_scalars(
        self, group: dict[str, Any], t: torch.Tensor, lr: Any, beta1: Any, eps: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        beta2 = group["beta2"]
        bias = torch.expm1(t * math.log1p(beta2))  # (1 + beta2)^t - 1
        return beta2 / bias, torch.zeros_like(t) + lr, eps / bias.sqrt()


def _check_adax_betas(betas: tuple[float, float]) -> None:
    check_beta(0, betas[0])
    if not 0.0 < betas[1] < 1.0:
        raise ValueError(
            f"Invalid betas[1]: {betas[1]!r}; AdaX needs 0 < betas[1] < 1 (the paper uses 1e-4)."
        )
