"""The segmentation loss without nll_loss2d or scatter (both flagged nondeterministic on CUDA, so
trainer.deterministic=true crashed there): same value and gradient as F.cross_entropy and the scatter
one-hot it replaced, ignore_index pixels included."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from experiments.tasks.segmentation.loss import ce_dice_loss, pixel_cross_entropy, soft_dice_loss
from experiments.tasks.segmentation.task import SegmentationTask

# aten ops that alert under use_deterministic_algorithms on CUDA (forward or backward)
FLAGGED = ("nll_loss2d", "scatter", "index_add", "put_")


class OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def batch(seed=0, classes=5):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(2, classes, 7, 9, generator=g) * 3).requires_grad_()
    target = torch.randint(0, classes, (2, 7, 9), generator=g)
    target[0, :2] = 255  # ignored rows
    target[1, 3, 4] = 255
    return logits, target


def old_dice(logits, target, ignore_index=255, smooth=1.0):
    valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target))
    probs = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    onehot = torch.zeros_like(probs).scatter_(1, labels.unsqueeze(1), valid.unsqueeze(1).float())
    inter, area = (probs * onehot).sum((0, 2, 3)), onehot.sum((0, 2, 3))
    dice = (2 * inter + smooth) / (probs.sum((0, 2, 3)) + area + smooth)
    present = (area > 0).float()
    return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_equals_torch_value_and_gradient(seed):
    logits, target = batch(seed)
    ours = pixel_cross_entropy(logits, target, 255)
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits, target, ignore_index=255)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-8)
    assert g_ours[0, :, :2].abs().max() == 0  # ignored pixels get no gradient


def test_ce_dice_equals_the_old_formula():
    logits, target = batch(2)
    for w in (0.0, 0.5, 1.0):
        ours = ce_dice_loss(logits, target, w, 255)
        old = (1 - w) * F.cross_entropy(logits, target, ignore_index=255) + w * old_dice(logits, target)
        torch.testing.assert_close(ours, old, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(soft_dice_loss(logits, target), old_dice(logits, target))


def test_loss_and_sampled_loss_use_no_cuda_nondeterministic_op():
    logits, target = batch(3, classes=4)
    task = SegmentationTask(num_classes=4, img_size=7)

    def model(images):
        return logits * images.mean()

    images = torch.ones(2, 3, 7, 9)
    for fn in (task.loss, task.sampled_loss):
        with OpNames() as ops:
            fn(model, (images, target)).backward()
        flagged = sorted(n for n in ops.names if any(f in n for f in FLAGGED))
        assert not flagged, f"{fn.__name__} runs {flagged}"


def test_dice_with_one_labelled_class_is_that_class_alone():
    """Only class 2 is labelled (the rest ignored): the mean over labelled classes is that class's 1 - Dice,
    computed here by hand from its definition; with nothing labelled the loss is 0, not NaN."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 4, 3, 5, generator=g)
    target = torch.full((1, 3, 5), 255)
    target[0, 1, 1:4] = 2
    probs = torch.softmax(logits, dim=1)[0, 2]
    mask = target[0] == 2
    inter = probs[mask].sum()
    dice = (2 * inter + 1.0) / (probs[mask].sum() + mask.sum() + 1.0)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - dice.item(), rel=1e-6)
    assert soft_dice_loss(logits, torch.full((1, 3, 5), 255)).item() == 0.0
