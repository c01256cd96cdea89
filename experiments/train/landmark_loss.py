"""The training loss the paper's late-training claims are about: eval mode, the whole training set, float64.

The per-step loss in train.csv is one batch's loss, with dropout on, in float32 (Adam's is exactly 0.0 on
tens of thousands of late steps of the digits runs). ``full_batch_loss`` evaluates a float64 copy of the
model in eval mode on every sample of ``loader`` (the training set, not shuffled, no sample dropped) and
returns the mean of the task's loss over samples, summed in float64. The model itself, its mode and the
random number generators are left exactly as they were (``torch.random.fork_rng``): a run that computes
landmark losses trains the same as one that does not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from experiments.train.task import Task


def to_float64(batch: Any) -> Any:
    """``batch`` with every floating-point tensor (in tuples, lists and dicts too) as float64."""
    if isinstance(batch, torch.Tensor):
        return batch.to(torch.float64) if batch.is_floating_point() else batch
    if isinstance(batch, tuple):
        return tuple(to_float64(b) for b in batch)
    if isinstance(batch, list):
        return [to_float64(b) for b in batch]
    if isinstance(batch, dict):
        return {k: to_float64(v) for k, v in batch.items()}
    return batch


@torch.no_grad()
def full_batch_loss(
    model: nn.Module,
    task: Task,
    loader: Iterable,
    device: torch.device | str,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, int]:
    """(mean loss over the samples of ``loader``, number of samples), in float64 and eval mode.

    ``task.loss`` of each batch is its mean over the batch; it is weighted by ``task.batch_size``. Under DDP
    pass each rank its shard and ``all_reduce_sum`` (the sums are reduced before the division)."""
    device = torch.device(device)
    source = model.module if hasattr(model, "module") else model  # DDP / compiled wrappers
    source = getattr(source, "_orig_mod", source)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        model64 = copy.deepcopy(source).to(device=device, dtype=torch.float64).eval()
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, samples
        for batch in loader:
            batch = to_float64(task.to_device(batch, device))
            n = task.batch_size(batch)
            loss = task.loss(model64, batch)
            totals[0] += loss.to(torch.float64) * n
            totals[1] += n
        del model64
    if all_reduce_sum is not None:
        totals = all_reduce_sum(totals)
    samples = int(totals[1].item())
    if samples == 0:
        raise ValueError(
            "The loader for the full-batch training loss gave no samples; pass the training set."
        )
    return float(totals[0].item() / samples), samples
