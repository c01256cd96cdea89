"""The paper's segmentation loss: a weighted average of pixel cross-entropy and soft multi-class Dice.

``loss = (1 - w) * CE + w * Dice`` with ``w = dice_weight`` (0.5: the plain average). Dice is soft
(softmax P against one-hot labels Y) and computed per class over the whole batch,
``Dice_c = (2 |P_c Y_c| + s) / (|P_c| + |Y_c| + s)`` with smoothing ``s = 1``; the loss is ``1 - Dice_c``
averaged over the classes present in the batch's labels. Absent classes are left out: their only way to
score is to put exactly zero probability on them, a term whose gradient per pixel is ~N times CE's and
would swamp it, while CE already penalises predicting them. Pixels labelled ``ignore_index`` are left out
of both terms.

Both terms are built from elementwise ops and plain reductions (one-hot by comparison, no ``scatter`` or
``nll_loss2d``), so ``torch.use_deterministic_algorithms(True)`` accepts them on CUDA: the 4-D
``F.cross_entropy`` dispatches to ``nll_loss2d``, whose CUDA kernel is flagged nondeterministic.
"""

from __future__ import annotations

import torch


def one_hot_masked(target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(B, C, H, W) float one-hot of int labels (B, H, W); all-zero at ``ignore_index`` pixels."""
    classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) == classes).float()  # ignore_index >= num_classes matches no class


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean over the non-ignored pixels of -log softmax(logits)[label]: ``F.cross_entropy(logits, target,
    ignore_index=...)`` computed deterministically (log-softmax times the one-hot, summed)."""
    onehot = one_hot_masked(target, logits.shape[1], ignore_index)
    count = (target != ignore_index).sum().clamp_min(1)
    return -(torch.log_softmax(logits.float(), dim=1) * onehot).sum() / count


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """Mean over the labelled classes of 1 - soft Dice, for logits (B, C, H, W) and int labels (B, H, W)."""
    valid = target != ignore_index
    probs = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    onehot = one_hot_masked(target, logits.shape[1], ignore_index)
    dims = (0, 2, 3)
    inter, label_area = (probs * onehot).sum(dims), onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (probs.sum(dims) + label_area + smooth)
    present = (label_area > 0).to(dice.dtype)
    return ((1.0 - dice) * present).sum() / present.sum().clamp_min(1.0)


def ce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.5, ignore_index: int = 255
) -> torch.Tensor:
    """``(1 - dice_weight) * CE + dice_weight * Dice``, CE averaged over the non-ignored pixels."""
    logits = logits.float()
    target = target.long()
    ce = pixel_cross_entropy(logits, target, ignore_index)
    if dice_weight == 0:
        return ce
    return (1.0 - dice_weight) * ce + dice_weight * soft_dice_loss(logits, target, ignore_index)
