"""The protocol every task implements, and the context evaluation runs in.

The trainer knows nothing about images, boxes or masks: it moves batches to the device with
``to_device``, asks ``loss`` for a scalar to minimise, and asks ``evaluate`` for a dict of metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


def current_rank() -> int:
    """This process's rank in the default group (0 without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity without a process group)."""
    from experiments.train.collectives import broadcast_object

    return broadcast_object(obj)


@dataclass
class EvalContext:
    """Where evaluation runs: device, autocast context, and cross-rank reductions (identity on one process).

    ``rank`` and ``broadcast_object`` let a task score on rank 0 alone and hand the result to the others;
    both default to the live process group, so a context built without them still does the right thing.
    """

    device: torch.device
    autocast: Callable[[], AbstractContextManager] = nullcontext
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    all_gather_object: Callable[[Any], list[Any]] = field(default=lambda obj: [obj])
    progress: Callable[[Iterable], Iterable] = field(default=lambda it: it)
    rank: int = field(default_factory=current_rank)
    broadcast_object: Callable[[Any], Any] = field(default=broadcast_from_rank0)


@runtime_checkable
class Task(Protocol):
    """A training objective plus its evaluation."""

    name: str
    primary_metric: str  # key of evaluate()'s dict that selects best.pt
    higher_is_better: bool

    def collate(self, samples: list[Any]) -> Any:
        """Turn a list of dataset items into one batch (the DataLoader's collate_fn)."""

    def to_device(self, batch: Any, device: torch.device, channels_last: bool = False) -> Any:
        """Move a batch to ``device`` (non-blocking); images to channels_last when asked."""

    def batch_size(self, batch: Any) -> int:
        """Number of samples in ``batch`` (for images/s)."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of ``model`` on ``batch`` (called under autocast by the trainer)."""

    def sampled_loss(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        """Loss on labels sampled from the model's own predictive distribution (SophiaG's
        Gauss-Newton-Bartlett estimator), or None where the task does not define one."""

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        """Metrics of ``model`` (already in eval mode, under no_grad) over the whole ``loader``."""
