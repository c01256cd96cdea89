"""SophiaG's Hessian refresh inside the training loop: the sampled-label loss's gradient, loss-scaled like a
training step under fp16."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from experiments.train.task import Task


def check(task: Task, optimizer: torch.optim.Optimizer, interval: int | None) -> None:
    """Refuse, in one sentence, a Hessian interval the optimizer or the task cannot honour."""
    if interval and not hasattr(optimizer, "update_hessian"):
        raise ValueError(
            f"optimizer.hessian_update_interval={interval} is set but {type(optimizer).__name__} "
            "has no update_hessian(); remove the key or use optimizer=sophiag."
        )
    if interval and not getattr(task, "has_sampled_loss", True):
        raise ValueError(
            f"optimizer.hessian_update_interval is set but task {task.name!r} defines no sampled_loss, "
            "which SophiaG's Hessian estimate needs; use another optimizer for this task."
        )


def refresh(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    autocast: Callable[[], AbstractContextManager],
    scaler: torch.amp.GradScaler | None,
) -> bool:
    """Refresh the Hessian EMA from the gradient of the sampled-label loss; False when skipped.

    Under fp16 the pass is loss-scaled like the training step (the GradScaler's current scale), the
    gradients unscaled before ``update_hessian``, and a refresh whose gradients are not finite is
    skipped (the trainer counts it in summary.json); the scale itself is left to the training steps.
    """
    with autocast():
        loss = task.sampled_loss(model, batch)
    if loss is None:
        raise ValueError(
            f"optimizer.hessian_update_interval is set but task {task.name!r} defines no "
            "sampled_loss; SophiaG needs one."
        )
    done = True
    if scaler is None:
        loss.backward()
        optimizer.update_hessian()
    else:
        scale = scaler.get_scale()
        (loss * scale).backward()
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch._foreach_mul_(grads, 1.0 / scale)
        if not grads or torch.stack([torch.isfinite(g).all() for g in grads]).all():
            optimizer.update_hessian()
        else:
            done = False
    optimizer.zero_grad(set_to_none=True)
    return done
