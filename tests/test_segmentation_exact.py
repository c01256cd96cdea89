"""Segmentation with hand-computed values: CE and soft Dice on three pixels (one ignored, one class
absent), the confusion matrix with non-consecutive labels and another ignore index, mIoU over the
classes that occur, and the task's pixel accuracy and per-class IoUs."""

import math

import pytest
import torch
from torch import nn

from experiments.segmentation.loss import ce_dice_loss, one_hot_masked, pixel_cross_entropy, soft_dice_loss
from experiments.segmentation.miou import ConfusionMatrix, iou_per_class, mean_iou
from experiments.tasks import EvalContext
from experiments.tasks.segmentation import SegmentationTask

IGNORE = 255


def three_pixels():
    """Logits (0, ln 3, ln 4) at every pixel: softmax (1/8, 3/8, 1/2); labels 0, 1, ignored."""
    logits = torch.tensor([0.0, math.log(3), math.log(4)], dtype=torch.float64).view(1, 3, 1, 1)
    return logits.expand(1, 3, 1, 3).clone(), torch.tensor([[[0, 1, IGNORE]]])


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
    onehot = one_hot_masked(torch.tensor([[[2, IGNORE, 0]]]), 3)
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
    label = torch.tensor([4, 4, 4, 0, 0, IGNORE, IGNORE])
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
    cm.update(torch.tensor([0, 255, 9]), torch.tensor([0, IGNORE, IGNORE]))
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
    cm.update(torch.tensor([0]), torch.tensor([IGNORE]))
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
    masks = torch.tensor([[[0, 1], [IGNORE, 1]], [[1, 1], [IGNORE, IGNORE]]])
    batch = (torch.zeros(2, 3, 2, 2), masks)
    metrics = task.evaluate(Constant(1), [batch], EvalContext(device=torch.device("cpu")))
    # 5 labelled pixels, 4 of them class 1, all predicted 1: accuracy 4/5
    assert metrics["pixel_acc"] == pytest.approx(80.0)
    assert metrics["iou_bg"] == 0.0 and metrics["iou_cat"] == pytest.approx(80.0)  # cat: 4 / (4 + 1)
    assert math.isnan(metrics["iou_dog"])  # in neither labels nor predictions
    assert metrics["miou"] == pytest.approx(40.0)  # (0 + 80) / 2: dog left out
