"""Edges of the optimizer internals with exact expected values: one-element tensor hyperparameters, the
fused path's v-scale bookkeeping when beta2_hat_t = 1, and which exported moment wins on load."""

from __future__ import annotations

import pytest
import torch

import adamx
from adamx import _adaptive
from adamx.state import internal_state


@pytest.mark.parametrize("shape", [(), (1,)])
def test_one_element_tensor_lr_and_weight_decay_are_numbers(shape):
    """lr/wd given as one-element tensors (a scheduler's) give exactly the float results."""
    runs = []
    for as_tensor in (False, True):
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        lr, wd = (torch.full(shape, 0.5), torch.full(shape, 0.25)) if as_tensor else (0.5, 0.25)
        opt = adamx.AdamX([p], lr=lr, weight_decay=wd, eps=0.1)
        p.grad = torch.tensor([1.0, 0.5])
        opt.step()
        runs.append(p.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["lr", "weight_decay"])
def test_a_tensor_hyperparameter_with_two_values_is_refused_by_shape(name):
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(
        ValueError, match=rf"Invalid {name}: a tensor {name} must hold one value, got shape \(2,\)"
    ):
        adamx.AdamX([p], **{name: torch.tensor([0.1, 0.2])})


def test_accumulating_beta2_when_beta2_hat_is_one():
    """w = 1 - beta2_hat = 0 gives x = 0: v is rescaled up by 2^30 (capped at 2^60 overall), exactly."""
    beta, new_scale, rescale = _adaptive.accumulating_beta2(0.0, 1.0)
    assert (rescale, new_scale) == (2.0**30, 2.0**30)
    assert beta == 1.0 - _adaptive._MIN_KERNEL_WEIGHT
    _, new_scale, rescale = _adaptive.accumulating_beta2(0.0, 2.0**45)  # cap: 2^60 / 2^45 = 2^15
    assert (rescale, new_scale) == (2.0**15, 2.0**60)


def test_accumulating_beta2_keeps_x_in_its_band():
    """w = 2^-20: x = w / (1 - w) is above 2^-25, so v' is halved 7 times (2^-26.5 / 2^-20 rounds to 2^-7)."""
    w = 2.0**-20
    beta, new_scale, rescale = _adaptive.accumulating_beta2(w, 1.0)
    assert rescale == 2.0**-7
    assert new_scale == 2.0**-7 / (1.0 - w)
    assert beta == 1.0 - new_scale * w


def _saved(exported_m: torch.Tensor) -> dict:
    stored_m, stored_v = torch.tensor([2.0, 4.0]), torch.tensor([8.0, 16.0])
    return {
        "step": torch.tensor(3.0),
        "exp_avg": exported_m,
        "exp_avg_sq": torch.tensor([2.0, 4.0]),  # = stored_v / 4
        "fused_exp_avg": stored_m,
        "fused_exp_avg_sq": stored_v,
        "fused_exp_avg_scale": 2.0,
        "fused_exp_avg_sq_scale": 4.0,
        "fused_decay_carry": 0.5,
    }


def test_internal_state_restores_the_scaled_copies_while_they_match():
    saved = _saved(torch.tensor([1.0, 2.0]))  # = stored_m / 2
    live = internal_state(saved)
    assert live["exp_avg"] is saved["fused_exp_avg"] and live["exp_avg_scale"] == 2.0
    assert live["exp_avg_sq"] is saved["fused_exp_avg_sq"] and live["exp_avg_sq_scale"] == 4.0
    assert live["decay_carry"] == 0.5 and "fused_exp_avg" not in live


@pytest.mark.parametrize(
    "exported",
    [torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([[1.0, 2.0]])],
    ids=["edited value", "other dtype", "other shape"],
)
def test_an_exported_moment_that_no_longer_matches_wins_with_scale_one(exported):
    """A moment edited or converted after export (value, dtype or shape) is used as it is, scale 1."""
    live = internal_state(_saved(exported))
    assert live["exp_avg"] is exported and live["exp_avg_scale"] == 1.0
    assert live["exp_avg_sq_scale"] == 4.0  # the other moment still matches its copy
