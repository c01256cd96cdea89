"""experiments/train/landmark_loss.py: eval mode, every sample, float64, nothing disturbed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from experiments.tasks.classification import ClassificationTask
from experiments.train.landmark_loss import full_batch_loss


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = torch.randn(37, 5), torch.randint(0, 3, (37,))
    task = ClassificationTask(num_classes=3)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False, collate_fn=task.collate)
    return model, task, loader, x, y


def test_mean_over_every_sample_in_float64_with_dropout_off() -> None:
    model, task, loader, x, y = setup()
    model.train()
    loss, n = full_batch_loss(model, task, loader, "cpu")
    assert n == 37  # the last, partial batch counts, weighted by its size
    ref = nn.Sequential(*[m for m in model]).double().eval()  # the same weights, eval mode, float64
    want = F.cross_entropy(ref(x.double()), y).item()
    assert loss == pytest.approx(want, rel=1e-14)


def test_model_mode_dtype_and_random_streams_are_left_alone() -> None:
    model, task, loader, _, _ = setup(1)
    model.train()
    weights = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    full_batch_loss(model, task, loader, "cpu")
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert torch.equal(torch.get_rng_state(), state)  # dropout masks of the next step are unchanged


def test_tiny_losses_keep_their_digits_where_float32_gives_zero() -> None:
    model, task, _, _, _ = setup(2)
    with torch.no_grad():  # a confident model: logits 40 apart, loss ~ exp(-40) = 4e-18 per sample
        model[3].weight.zero_()
        model[3].bias.copy_(torch.tensor([40.0, 0.0, 0.0]))
    x, y = torch.randn(10, 5), torch.zeros(10, dtype=torch.long)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=task.collate)
    loss, _ = full_batch_loss(model, task, loader, "cpu")
    assert loss == pytest.approx(2 * math.exp(-40), rel=1e-6)
    assert F.cross_entropy(model.eval()(x), y).item() == 0.0  # what the float32 per-batch loss logs


def test_empty_loader_is_one_sentence() -> None:
    model, task, _, _, _ = setup()
    with pytest.raises(ValueError, match="no samples"):
        full_batch_loss(model, task, [], "cpu")
