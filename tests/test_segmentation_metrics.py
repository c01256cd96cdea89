"""mIoU (hand-computed matrices, a second formulation), CE + Dice, the sampled loss and the task's evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments.segmentation.loss import ce_dice_loss, soft_dice_loss
from experiments.segmentation.miou import ConfusionMatrix, iou_per_class, mean_iou
from experiments.tasks import EvalContext, build_task
from experiments.tasks.segmentation import SegmentationTask

IGNORE = 255


def reference_iou(pred: np.ndarray, label: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Per-class IoU from TP/FP/FN pixel sets (NaN for a class in neither), and their nan-mean."""
    valid = label != IGNORE
    ious = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (label == c) & valid)
        fp = np.sum((pred == c) & (label != c) & valid)
        fn = np.sum((pred != c) & (label == c) & valid)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    ious = np.array(ious, dtype=np.float64)
    return ious, float(np.nanmean(ious))


def test_hand_computed_matrix_with_absent_class_and_ignored_pixels():
    label = torch.tensor([0, 0, 0, 1, 1, 2, 2, IGNORE, IGNORE])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3, 1])  # the 3 sits on an ignored pixel
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    mat = cm.reduce(lambda t: t)
    assert mat.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(mat)
    assert iou[:3].tolist() == pytest.approx([2 / 4, 1 / 3, 1 / 3])
    assert math.isnan(iou[3])  # in neither labels nor predictions: left out of the mean
    assert mean_iou(mat) == pytest.approx(7 / 18)
    # a class that is only predicted counts, with IoU 0
    cm.update(torch.tensor([3]), torch.tensor([0]))
    mat = cm.reduce(lambda t: t)
    assert iou_per_class(mat)[3] == 0 and mean_iou(mat) == pytest.approx((2 / 5 + 1 / 3 + 1 / 3 + 0) / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulated_matrix_matches_the_pixel_set_formulation(seed):
    rng = np.random.default_rng(seed)
    c = 6
    labels = [
        rng.integers(0, c - 1, size=rng.integers(5, 40, size=2)) for _ in range(4)
    ]  # class 5 never labelled
    preds = [np.where(rng.random(lab.shape) < 0.6, lab, rng.integers(0, c - 2, lab.shape)) for lab in labels]
    for lab in labels:
        lab[rng.random(lab.shape) < 0.1] = IGNORE
    cm = ConfusionMatrix(c)
    for p, lab in zip(preds, labels, strict=True):
        cm.update(torch.from_numpy(p), torch.from_numpy(lab))
    mat = cm.reduce(lambda t: t)
    flat_p = np.concatenate([p.ravel() for p in preds])
    flat_l = np.concatenate([lab.ravel() for lab in labels])
    ref_iou, ref_miou = reference_iou(flat_p, flat_l, c)
    np.testing.assert_allclose(iou_per_class(mat).numpy(), ref_iou, equal_nan=True)
    assert mean_iou(mat) == pytest.approx(ref_miou)
    assert mat.sum() == np.sum(flat_l != IGNORE)
    # two identical ranks: counts double, IoUs do not move
    doubled = cm.reduce(lambda t: 2 * t)
    assert torch.equal(doubled, 2 * mat) and mean_iou(doubled) == pytest.approx(ref_miou)


def test_out_of_range_labels_are_reported():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 7, IGNORE]))
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.reduce(lambda t: t)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))


def reference_dice(probs: np.ndarray, target: np.ndarray) -> float:
    """1 - Dice averaged over the labelled classes, written as a loop over classes on valid pixels."""
    valid = target != IGNORE
    losses = []
    for c in range(probs.shape[1]):
        y = ((target == c) & valid).astype(np.float64)
        if y.sum() == 0:
            continue
        p = probs[:, c] * valid
        losses.append(1 - (2 * np.sum(p * y) + 1) / (np.sum(p) + np.sum(y) + 1))
    return float(np.mean(losses))


def _case(seed: int = 0, c: int = 5, shape=(2, 12, 10)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], c, *shape[1:], generator=gen)
    target = torch.randint(0, c - 1, shape, generator=gen)
    target[:, :, -3:] = IGNORE  # the right 3 columns are ignored
    return logits, target


def test_dice_matches_per_class_loop_and_perfect_logits_give_zero():
    logits, target = _case()
    probs = torch.softmax(logits, 1).numpy()
    assert soft_dice_loss(logits, target).item() == pytest.approx(
        reference_dice(probs, target.numpy()), rel=1e-5
    )
    perfect = 50.0 * F.one_hot(target.clamp_max(4), 5).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, target).item() < 1e-5
    assert ce_dice_loss(perfect, target).item() < 1e-5
    wrong = 50.0 * F.one_hot((target + 1) % 5, 5).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(wrong, target).item() > 0.9


def test_ignored_pixels_do_not_change_the_loss():
    logits, target = _case(seed=1)
    other = logits.clone()
    other[..., -3:] = 100 * torch.randn_like(other[..., -3:])  # anything at the ignored pixels
    for fn in (soft_dice_loss, ce_dice_loss):
        base = fn(logits, target)
        assert fn(other, target).item() == pytest.approx(base.item(), rel=1e-6)
        # the same as the loss of the labelled region alone
        assert fn(logits[..., :-3], target[..., :-3]).item() == pytest.approx(base.item(), rel=1e-6)


def test_dice_weight_mixes_ce_and_dice():
    logits, target = _case(seed=2)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    dice = soft_dice_loss(logits, target)
    assert ce_dice_loss(logits, target, dice_weight=0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert ce_dice_loss(logits, target, dice_weight=1.0).item() == pytest.approx(dice.item(), rel=1e-6)
    assert ce_dice_loss(logits, target).item() == pytest.approx(0.5 * (ce + dice).item(), rel=1e-6)
    logits.requires_grad_(True)
    ce_dice_loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[..., -3:].abs().max() == 0


class FixedLogits(nn.Module):
    """A 'model' whose output is a learnable logits tensor, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_sampled_loss_draws_labels_from_the_softmax_and_skips_ignored_pixels():
    torch.manual_seed(0)
    p = torch.tensor([0.7, 0.2, 0.1])
    logits = p.log().view(1, 3, 1, 1).expand(4, 3, 64, 64).clone()
    masks = torch.zeros(4, 64, 64, dtype=torch.long)
    masks[:, :, 32:] = IGNORE
    logits[:, 0, :, 32:] = 30.0  # certain where ignored: CE ~0 there, would halve the mean if counted
    task = SegmentationTask(num_classes=3)
    loss = task.sampled_loss(FixedLogits(logits), (torch.zeros(4, 3, 64, 64), masks))
    entropy = -(p * p.log()).sum().item()  # E[-log p(sampled)] = H(p)
    assert loss.item() == pytest.approx(entropy, abs=0.03)
    loss.backward()


def test_evaluate_upsamples_to_each_original_size_and_scores_it():
    # images 8x8; the 'model' says class 1 on the left half and class 0 on the right half
    logits = torch.zeros(1, 3, 8, 8)
    logits[:, 1, :, :4] = 5.0
    logits[:, 0, :, 4:] = 5.0

    class HalfModel(nn.Module):
        def forward(self, x):
            return logits.expand(x.shape[0], -1, -1, -1)

    rng = np.random.default_rng(0)
    masks = [
        torch.from_numpy(rng.integers(0, 3, size=s).astype(np.uint8)) for s in [(12, 16), (8, 8), (6, 10)]
    ]
    masks[0][0, :5] = IGNORE
    samples = [(torch.zeros(3, 8, 8, dtype=torch.uint8), m) for m in masks]
    task = build_task("segmentation", num_classes=3, img_size=8, class_names=["bg", "a", "b"])
    calls = []

    def reduce(t):
        calls.append(t.clone())
        return t

    ctx = EvalContext(device=torch.device("cpu"), all_reduce_sum=reduce)
    batches = [task.collate(samples[:2]), task.collate(samples[2:])]  # a list of masks, then a stacked one
    assert isinstance(batches[0][1], list) and isinstance(batches[1][1], torch.Tensor)
    metrics = task.evaluate(HalfModel(), batches, ctx)
    preds, labels = [], []
    for m in masks:  # bilinear upsampling keeps the half boundary at width / 2
        h, w = m.shape
        pred = np.zeros((h, w), dtype=np.int64)
        pred[:, : w // 2] = 1
        preds.append(pred.ravel())
        labels.append(m.numpy().astype(np.int64).ravel())
    ref_iou, ref_miou = reference_iou(np.concatenate(preds), np.concatenate(labels), 3)
    assert len(calls) == 1  # one reduction for the whole set
    assert metrics["miou"] == pytest.approx(100 * ref_miou)
    assert [metrics[k] for k in ("iou_bg", "iou_a")] == pytest.approx(list(100 * ref_iou[:2]))
    assert metrics["iou_b"] == 0.0  # labelled, never predicted
    assert set(metrics) == {"miou", "pixel_acc", "iou_bg", "iou_a", "iou_b"} and task.primary_metric == "miou"


def test_task_guards():
    task = SegmentationTask(num_classes=21, img_size=16)
    assert task.class_names[0] == "background" and task.class_names[-1] == "tvmonitor"
    with pytest.raises(ValueError, match="original-size"):
        task.loss(FixedLogits(torch.zeros(1, 21, 16, 16)), (torch.zeros(1, 3, 16, 16), [torch.zeros(9, 9)]))
    with pytest.raises(ValueError, match="task.img_size=16"):
        batch = (torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
        task.evaluate(FixedLogits(torch.zeros(1, 21, 8, 8)), [batch], EvalContext(device=torch.device("cpu")))
    with pytest.raises(ValueError, match="dice_weight"):
        SegmentationTask(dice_weight=1.5)
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationTask(num_classes=21, ignore_index=3)
