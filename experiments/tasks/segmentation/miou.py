"""Mean intersection over union (Eq. 21) from a confusion matrix accumulated over the whole eval set.

Rows of the matrix are labels, columns predictions, counted on the device with one ``bincount`` per
update; pixels labelled ``ignore_index`` are skipped. ``IoU_c = TP / (TP + FP + FN)``. A class absent from
both the labels and the predictions of the whole set has 0/0: its IoU is NaN and the mean leaves it out
(a nan-mean, as mmsegmentation's ``np.nanmean`` does), since counting it as 0 or 1 would move the mean
by a class that was never tested. On SBD val all 21 classes occur, so Eq. 21's 1/C holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ConfusionMatrix:
    """A (C, C) int64 label-by-prediction count, plus a count of out-of-range labels or predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.bad = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count the pixels of integer predictions and labels of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(
                f"Prediction shape {tuple(pred.shape)} differs from label shape {tuple(target.shape)}."
            )
        c = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = target != self.ignore_index
        ok = (target >= 0) & (target < c) & (pred >= 0) & (pred < c)
        self.bad += (keep & ~ok).sum()
        index = torch.where(keep & ok, target * c + pred, c * c)  # bin c*c collects skipped pixels
        self.mat += torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)

    def reduce(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Sum over processes and check; return the (C, C) matrix."""
        both = all_reduce_sum(torch.cat([self.mat.reshape(-1), self.bad.reshape(1)]))
        bad = int(both[-1].item())
        if bad:
            raise ValueError(
                f"{bad} pixels had a label or prediction outside 0..{self.num_classes - 1} (and not the ignore "
                f"index {self.ignore_index}); check that task.num_classes matches the data set's masks."
            )
        return both[:-1].view(self.num_classes, self.num_classes)


def iou_per_class(mat: torch.Tensor) -> torch.Tensor:
    """Float64 IoU per class from a (C, C) label-by-prediction matrix; NaN where a class is in neither."""
    mat = mat.double()
    tp = mat.diagonal()
    union = mat.sum(0) + mat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(mat: torch.Tensor) -> float:
    """Eq. 21 over the classes present in labels or predictions (the NaN IoUs left out)."""
    iou = iou_per_class(mat)
    present = ~iou.isnan()
    return float(iou[present].mean()) if present.any() else float("nan")
