"""Semantic segmentation (U-Net on SBD): CE + Dice for training, mIoU (Eq. 21) for evaluation.

Training batches are ``(images float (B, 3, S, S) in [0, 1], masks int64 (B, S, S))``, 255 = ignore
(docs/architecture.md, "Segmentation batches"). Evaluation batches carry the original-size masks, which
differ between images, so there ``masks`` is a list of int64 (H_i, W_i) tensors (a stacked tensor when
all sizes agree). The model predicts at ``img_size``; its logits are upsampled (bilinear) to each
original size and scored there, summed into one confusion matrix over the whole eval set and all ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from experiments.tasks.segmentation.loss import ce_dice_loss, pixel_cross_entropy
from experiments.tasks.segmentation.miou import ConfusionMatrix, iou_per_class, mean_iou
from experiments.train.task import EvalContext

Masks = torch.Tensor | list[torch.Tensor]
Batch = tuple[torch.Tensor, Masks]


def default_class_names(num_classes: int) -> list[str]:
    """SBD's names (background + the 20 VOC classes) for 21 classes, else the class indices.

    Built from VOC's class list rather than imported from ``data.sbd``, whose reader needs scipy (for
    the ``.mat`` masks): a task on synthetic data (the GPU acceptance run) needs no scipy."""
    if num_classes == 21:
        from data.voc.reader import VOC_CLASSES

        return ["background", *VOC_CLASSES]
    return [str(i) for i in range(num_classes)]


class SegmentationTask:
    """Per-pixel classification: ``loss`` = CE + Dice, ``evaluate`` -> miou, pixel_acc, iou_<class> (percent)."""

    name = "segmentation"
    primary_metric = "miou"
    higher_is_better = True

    def __init__(
        self,
        num_classes: int = 21,
        dice_weight: float = 0.5,
        img_size: int = 320,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not 0.0 <= dice_weight <= 1.0:
            raise ValueError(f"task.dice_weight={dice_weight} must be in [0, 1] (0: CE only, 1: Dice only).")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"task.ignore_index={ignore_index} is a class index; use 255 (outside 0..{num_classes - 1})."
            )
        names = list(class_names) if class_names is not None else default_class_names(num_classes)
        if len(names) != num_classes:
            raise ValueError(
                f"task.class_names has {len(names)} names for {num_classes} classes; give one per class."
            )
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.img_size = img_size
        self.ignore_index = ignore_index
        self.class_names = names
        self.metric_directions = {"miou": True, "pixel_acc": True, **{f"iou_{n}": True for n in names}}

    # -- batches ---------------------------------------------------------------------------------
    def collate(self, samples: list[Any]) -> Batch:
        """Items ``(image uint8 (3, S, S), mask uint8)`` -> float images in [0, 1] and int64 masks, stacked
        when they share one size (training), else a list (evaluation's original sizes)."""
        images = torch.stack([s[0] for s in samples]).float().div_(255.0)
        masks = [torch.as_tensor(s[1]).long() for s in samples]
        if all(m.shape == masks[0].shape for m in masks):
            return images, torch.stack(masks)
        return images, masks

    def to_device(self, batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
        images, masks = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if isinstance(masks, torch.Tensor):
            return images, masks.to(device, non_blocking=True)
        return images, [m.to(device, non_blocking=True) for m in masks]

    def batch_size(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    # -- training --------------------------------------------------------------------------------
    def _logits_and_masks(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = batch
        if not isinstance(masks, torch.Tensor) or masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                "The segmentation loss needs masks of the images' size (a training batch); this batch has "
                "original-size evaluation masks. Use the data set's train split for training."
            )
        return model(images), masks

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, masks = self._logits_and_masks(model, batch)
        return ce_dice_loss(logits, masks, self.dice_weight, self.ignore_index)

    def sampled_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Pixel CE against labels drawn from the model's own softmax (Gumbel-max), ignored pixels left out."""
        logits, masks = self._logits_and_masks(model, batch)
        with torch.no_grad():
            gumbel = -torch.empty_like(logits, dtype=torch.float32).exponential_().log()
            sampled = (logits.detach().float() + gumbel).argmax(dim=1)
            sampled = torch.where(masks == self.ignore_index, masks, sampled)
        return pixel_cross_entropy(logits, sampled, self.ignore_index)  # deterministic on CUDA

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        confusion = ConfusionMatrix(self.num_classes, self.ignore_index, ctx.device)
        for batch in ctx.progress(loader):
            images, masks = self.to_device(batch, ctx.device)
            if images.shape[-2:] != (self.img_size, self.img_size):
                raise ValueError(
                    f"Evaluation images are {tuple(images.shape[-2:])}, but task.img_size={self.img_size}; "
                    "set dataset.img_size and task.img_size to the same value."
                )
            with ctx.autocast():
                logits = model(images)
            logits = logits.float()
            if isinstance(masks, torch.Tensor):  # one size for the whole batch: upsample at once
                up = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
                confusion.update(up.argmax(dim=1), masks)
            else:
                for logit, mask in zip(logits, masks, strict=True):
                    up = F.interpolate(
                        logit[None], size=mask.shape[-2:], mode="bilinear", align_corners=False
                    )
                    confusion.update(up[0].argmax(dim=0), mask)
        mat = confusion.reduce(ctx.all_reduce_sum)
        total = int(mat.sum().item())
        if total == 0:
            raise ValueError("The evaluation set has no labelled pixels; check the data set's eval split.")
        iou = iou_per_class(mat)
        metrics = {"miou": 100.0 * mean_iou(mat), "pixel_acc": 100.0 * float(mat.diagonal().sum()) / total}
        metrics.update(
            {f"iou_{n}": 100.0 * float(v) for n, v in zip(self.class_names, iou.tolist(), strict=True)}
        )
        return metrics
