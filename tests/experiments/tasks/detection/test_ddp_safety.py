"""DetectionTask under DDP: the world-size factor scales the gradient only (the logged loss is one
process's), and a scoring error on rank 0 reaches every rank instead of leaving them in the broadcast."""

import numpy as np
import pytest
import torch

import experiments.tasks.detection.task as detection
from experiments.tasks import EvalContext
from experiments.tasks.detection.task import SCORING_ERROR, DetectionTask, scale_grad
from models.yolov7_tiny import YOLOv7Tiny


def loss_and_grad(world: int, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    monkeypatch.setattr(detection, "world_size", lambda: world)
    torch.manual_seed(0)
    model = YOLOv7Tiny(num_classes=4)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0.0, 1, 20, 24, 18, 22], [1.0, 3, 40, 36, 30, 16]])
    loss = DetectionTask(num_classes=4, img_size=64).loss(model, (images, targets, []))
    loss.backward()
    return loss.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_world_size_scales_the_gradient_and_leaves_the_logged_loss_alone(monkeypatch):
    one_loss, one_grad = loss_and_grad(1, monkeypatch)
    three_loss, three_grad = loss_and_grad(3, monkeypatch)
    assert torch.equal(three_loss, one_loss)  # what the Trainer logs: the single-process value
    # YOLOv7's factor, on the gradient (scaling the backward pass rounds differently from scaling after)
    assert float((three_grad - 3 * one_grad).norm() / (3 * one_grad).norm()) < 1e-5


def test_scale_grad_is_the_identity_forward():
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    y = scale_grad(x, 4.0)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([4.0, 4.0]))


class Failing(DetectionTask):
    def score(self, parts):
        raise ValueError("pycocotools: bad annotation")


def test_a_scoring_error_on_rank0_is_broadcast_and_raised_on_every_rank():
    task = Failing(num_classes=2, img_size=64, coco_metrics=False)
    sent = []
    rank0 = EvalContext(
        device=torch.device("cpu"), rank=0, broadcast_object=lambda obj: sent.append(obj) or obj
    )
    with pytest.raises(ValueError, match="bad annotation"):
        task.evaluate(torch.nn.Identity(), [], rank0)
    assert sent == [{SCORING_ERROR: "ValueError: pycocotools: bad annotation"}]  # the others were told
    rank1 = EvalContext(device=torch.device("cpu"), rank=1, broadcast_object=lambda obj: sent[0])
    with pytest.raises(RuntimeError, match="detection scoring failed on rank 0: ValueError: pycocotools"):
        task.evaluate(torch.nn.Identity(), [], rank1)


def test_metrics_are_still_broadcast_as_they_are():
    task = DetectionTask(num_classes=2, img_size=64, coco_metrics=False)
    sent = []
    ctx = EvalContext(
        device=torch.device("cpu"), rank=0, broadcast_object=lambda obj: sent.append(obj) or obj
    )
    metrics = task.evaluate(torch.nn.Identity(), [], ctx)
    assert sent == [metrics] and set(metrics) == {"map50", "map75"}
    assert np.isfinite(metrics["map50"])
