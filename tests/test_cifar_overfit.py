"""Every registered optimizer drives the training loss down on 64 fixture CIFAR images in 30 steps.

The images come through the real pipeline: torchvision's CIFAR100 reading the pickles, then the
device-resident loader's batched augmentation for the optimizer sweep (fast), and once the DataLoader
with the per-image transform. The network is a small CNN defined here, as the four paper models would
take minutes per optimizer on a CPU. SophiaG gets its Hessian refreshed every 5 steps from the
sampled-label loss, the way adamx/sophia.py documents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import adamx
from data.cifar import build
from data.fixtures import write_fixture

STEPS = 30
HESSIAN_EVERY = 5
# Peak LRs suited to a small CNN and 30 steps (not the paper's values, which suit 62,480 steps).
LR = {"sgd": 0.3, "radam": 3e-2, "lion": 2e-3}
DEFAULT_LR = 3e-3


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(32 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = write_fixture("cifar100", tmp_path_factory.mktemp("cifar"), n_train=64, n_test=8)
    return build(root=root, download=False)


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _train(name: str, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """STEPS full-batch steps of TinyCNN with optimizer ``name``; returns the losses."""
    torch.manual_seed(0)
    model = TinyCNN()
    groups = adamx.decay_param_groups(model, 0.01)
    extra = {"bs": 64} if name == "sophiag" else {}
    optimizer = adamx.create_optimizer(name, groups, lr=LR.get(name, DEFAULT_LR), **extra)
    losses = []
    for step, (images, labels) in zip(range(STEPS), batches):
        if name == "sophiag" and step % HESSIAN_EVERY == 0:
            adamx.gnb_hessian_update(optimizer, lambda x=images: adamx.sampled_cross_entropy(model(x)))
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    return losses


def _assert_down(name: str, losses: list[float]) -> None:
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert first > 4.0, f"{name}: an untrained 100-class net starts near ln(100), got {first:.3f}"
    assert last < 0.5 * first, f"{name}: loss {first:.3f} -> {last:.3f} in {STEPS} steps"


def _epochs(loader: Iterable) -> Iterator:
    """Each step is one epoch of 64 images: reshuffled and freshly augmented."""
    while True:
        yield from loader


@pytest.mark.parametrize("name", sorted(adamx.OPTIMIZERS))
def test_training_loss_goes_down(name, bundle):
    loader = bundle.device_loader("train", 64, True, True, "cpu", torch.Generator().manual_seed(1))
    _assert_down(name, _train(name, _epochs(loader)))


def test_dataloader_path_trains_too(bundle):
    torch.manual_seed(1)
    loader = DataLoader(bundle.train, batch_size=64, shuffle=True, drop_last=True)
    _assert_down("adamx", _train("adamx", _epochs(loader)))
