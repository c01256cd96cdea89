"""mIoU (hand-computed matrices, a second formulation), CE + Dice, the sampled loss and the task's evaluate.

Segmentation with hand-computed values: CE and soft Dice on three pixels (one ignored, one class
absent), the confusion matrix with non-consecutive labels and another ignore index, mIoU over the
classes that occur, and the task's pixel accuracy and per-class IoUs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments.tasks import EvalContext, build_task
from experiments.tasks.segmentation.loss import (
    ce_dice_loss,
    one_hot_masked,
    pixel_cross_entropy,
    soft_dice_loss,
)
from experiments.tasks.segmentation.miou import ConfusionMatrix, iou_per_class, mean_iou
from experiments.tasks.segmentation.task import SegmentationTask

# ---------------------------------------------------------------- from test_segmentation_metrics.py: mIoU (hand-computed matrices, a second formulation), CE + Dice, the sampled loss


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


# ---------------------------------------------------------------- from test_segmentation_exact.py: Segmentation with hand-computed values: CE and soft Dice on three pixels (one ig


IGNORE_EXACT = 255


def three_pixels():
    """Logits (0, ln 3, ln 4) at every pixel: softmax (1/8, 3/8, 1/2); labels 0, 1, ignored."""
    logits = torch.tensor([0.0, math.log(3), math.log(4)], dtype=torch.float64).view(1, 3, 1, 1)
    return logits.expand(1, 3, 1, 3).clone(), torch.tensor([[[0, 1, IGNORE_EXACT]]])


# CE: mean over the two labelled pixels of -log p: (ln 8 + ln 8/3) / 2
CE = (math.log(8) + math.log(8 / 3)) / 2
# Dice (smooth 1), ignored pixel left out of |P|: class 0: (2/8 + 1) / (2/8 + 1 + 1) = 5/9;
# class 1: (6/8 + 1) / (6/8 + 1 + 1) = 7/11; class 2 is in no label: left out of the mean.
DICE = ((1 - 5 / 9) + (1 - 7 / 11)) / 2


def test_cross_entropy_averages_over_labelled_pixels_only():
    """Catches CE divided by every pixel (ignored ones included) or summed instead of averaged."""
    logits, target = three_pixels()
    assert pixel_cross_entropy(logits, target).item() == pytest.approx(CE, rel=1e-6)


def test_soft_dice_leaves_out_ignored_pixels_and_absent_classes():
    """Catches ignored pixels' probabilities counted in |P_c|, absent classes averaged in, or smooth != 1."""
    logits, target = three_pixels()
    assert soft_dice_loss(logits, target).item() == pytest.approx(DICE, rel=1e-6)


@pytest.mark.parametrize("weight", [0.0, 0.25, 0.5, 1.0])
def test_ce_dice_weights(weight):
    """Catches the dice weight applied to CE (weights swapped) or a fixed 0.5."""
    logits, target = three_pixels()
    expected = (1 - weight) * CE + weight * DICE
    assert ce_dice_loss(logits, target, dice_weight=weight).item() == pytest.approx(expected, rel=1e-6)


def test_one_hot_is_zero_at_ignored_pixels():
    """Catches an ignore index mapped to a class (e.g. clamped to C - 1)."""
    onehot = one_hot_masked(torch.tensor([[[2, IGNORE_EXACT, 0]]]), 3)
    assert onehot[0, :, 0].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_ignored_pixels_get_no_gradient_and_labelled_ones_the_ce_dice_gradient():
    """Catches ignored pixels that still pull on the logits."""
    logits, target = three_pixels()
    logits.requires_grad_(True)
    ce_dice_loss(logits, target).backward()
    assert logits.grad[..., 2].abs().max().item() == 0.0
    assert logits.grad[..., :2].abs().min().item() > 0.0


def test_confusion_matrix_with_non_consecutive_labels():
    """Catches IoUs from a transposed matrix, a mean over every class (absent ones as 0) or over 1..C."""
    cm = ConfusionMatrix(5)
    label = torch.tensor([4, 4, 4, 0, 0, IGNORE_EXACT, IGNORE_EXACT])
    pred = torch.tensor([4, 4, 0, 0, 0, 4, 200])  # predictions at ignored pixels do not count, even 200
    cm.update(pred.view(1, 7), label.view(1, 7))
    mat = cm.reduce(lambda t: t)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    expected[4, 4], expected[4, 0], expected[0, 0] = 2, 1, 2  # rows labels, columns predictions
    assert torch.equal(mat, expected)
    iou = iou_per_class(mat)
    # class 0: TP 2, FP 1 (label 4 predicted 0), FN 0 -> 2/3; class 4: TP 2, FN 1 -> 2/3
    assert iou[0].item() == pytest.approx(2 / 3) and iou[4].item() == pytest.approx(2 / 3)
    assert all(math.isnan(iou[c].item()) for c in (1, 2, 3))
    assert mean_iou(mat) == pytest.approx(2 / 3)


def test_a_prediction_outside_the_classes_on_a_labelled_pixel_is_reported():
    """Catches out-of-range predictions silently dropped (or ignored pixels reported)."""
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 255, 9]), torch.tensor([0, IGNORE_EXACT, IGNORE_EXACT]))
    assert cm.reduce(lambda t: t).sum().item() == 1  # only the first pixel counts, nothing is bad
    cm.update(torch.tensor([255]), torch.tensor([1]))
    with pytest.raises(ValueError, match="1 pixels"):
        cm.reduce(lambda t: t)


def test_another_ignore_index_is_honoured_and_255_then_is_an_error():
    """Catches 255 hard-coded where the configured ignore index belongs."""
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(torch.tensor([1, 2, 0]), torch.tensor([1, 9, 9]))
    mat = cm.reduce(lambda t: t)
    assert mat.sum().item() == 1 and mat[1, 1].item() == 1
    cm.update(torch.tensor([0]), torch.tensor([IGNORE_EXACT]))
    with pytest.raises(ValueError, match="ignore index 9"):
        cm.reduce(lambda t: t)


def test_mean_iou_of_a_class_only_in_labels_is_zero_and_counted():
    """Catches a class that was labelled but never predicted being left out of the mean."""
    mat = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 0]])  # class 1 predicted once, never labelled
    # IoU: class 0 = 3 / (4 + 5 - 3) = 1/2; class 1 = 0 / 1 = 0; class 2 = 0 / 2 = 0
    assert iou_per_class(mat).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert mean_iou(mat) == pytest.approx(1 / 6)
    assert math.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.int64)))


class Constant(nn.Module):
    def __init__(self, cls: int, num_classes: int = 3) -> None:
        super().__init__()
        self.cls, self.num_classes = cls, num_classes

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.cls] = 5.0
        return out


def test_task_pixel_accuracy_and_ious_leave_out_ignored_pixels():
    """Catches pixel accuracy over all pixels (ignored included) and per-class IoUs put on wrong names."""
    task = SegmentationTask(num_classes=3, img_size=2, class_names=["bg", "cat", "dog"])
    masks = torch.tensor([[[0, 1], [IGNORE_EXACT, 1]], [[1, 1], [IGNORE_EXACT, IGNORE_EXACT]]])
    batch = (torch.zeros(2, 3, 2, 2), masks)
    metrics = task.evaluate(Constant(1), [batch], EvalContext(device=torch.device("cpu")))
    # 5 labelled pixels, 4 of them class 1, all predicted 1: accuracy 4/5
    assert metrics["pixel_acc"] == pytest.approx(80.0)
    assert metrics["iou_bg"] == 0.0 and metrics["iou_cat"] == pytest.approx(80.0)  # cat: 4 / (4 + 1)
    assert math.isnan(metrics["iou_dog"])  # in neither labels nor predictions
    assert metrics["miou"] == pytest.approx(40.0)  # (0 + 80) / 2: dog left out
