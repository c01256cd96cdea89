"""Image classification: cross-entropy for training, top-1/top-5 error (Eq. 16-17) for evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from experiments.train.task import EvalContext


class ClassificationTask:
    """Batches are ``(images, labels)``; metrics are error rates in percent over the whole eval set."""

    name = "classification"
    primary_metric = "top1_err"
    higher_is_better = False
    metric_directions = {"top1_err": False, "top5_err": False, "loss": False}

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, topk: int = 5) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.topk = min(topk, num_classes)

    def collate(self, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([s[0] for s in samples])
        labels = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long)
        return images, labels

    def to_device(self, batch: Any, device: torch.device, channels_last: bool = False) -> Any:
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(device, non_blocking=True)

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images), labels, label_smoothing=self.label_smoothing)

    def sampled_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Cross-entropy against labels drawn from the model's own softmax (Gauss-Newton-Bartlett)."""
        images, _ = batch
        logits = model(images)
        sampled = torch.multinomial(torch.softmax(logits.detach().float(), dim=-1), 1).squeeze(-1)
        return F.cross_entropy(logits, sampled)

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        # counts: [samples, top-1 wrong, top-k wrong, summed loss], summed across ranks at the end
        counts = torch.zeros(4, dtype=torch.float64, device=ctx.device)
        for batch in ctx.progress(loader):
            images, labels = self.to_device(batch, ctx.device)
            with ctx.autocast():
                logits = model(images)
            logits = logits.float()
            top = logits.topk(self.topk, dim=-1).indices
            hit = top == labels[:, None]
            counts[0] += labels.numel()
            counts[1] += (~hit[:, 0]).sum()
            counts[2] += (~hit.any(dim=-1)).sum()
            counts[3] += F.cross_entropy(logits, labels, reduction="sum")
        counts = ctx.all_reduce_sum(counts)
        n = counts[0].item()
        if n == 0:
            raise ValueError("The evaluation set is empty; check the dataset's eval split.")
        return {
            "top1_err": 100.0 * counts[1].item() / n,
            f"top{self.topk}_err" if self.topk != 5 else "top5_err": 100.0 * counts[2].item() / n,
            "loss": counts[3].item() / n,
        }
