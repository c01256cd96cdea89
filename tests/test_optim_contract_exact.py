"""Contract details the numeric tests cannot see: which path a flag selects, the exact sentence a bad
schedule gets, the normalised defaults, and the conversion of an AdamW state saved by an older torch."""

from __future__ import annotations

import copy

import pytest
import torch

import adamx
from adamx import lion as lion_module


@pytest.mark.parametrize("foreach, expect_foreach", [(None, True), (True, True), (False, False)])
def test_lion_foreach_flag_selects_the_path(monkeypatch, foreach, expect_foreach):
    """foreach=False must take the per-tensor loop, None/True the foreach kernel (same numbers, other cost)."""
    calls = []
    real = lion_module._foreach_lion
    monkeypatch.setattr(lion_module, "_foreach_lion", lambda *a: (calls.append(1), real(*a)))
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, -2.0, 0.0])
    adamx.Lion([p], lr=0.5, betas=(0.5, 0.25), weight_decay=1.0, foreach=foreach).step()
    assert bool(calls) is expect_foreach
    # the hand value: decay 1 - 0.5*1 = 0.5, update sign(0.5*0 + 0.5*g) = sign(g), step -0.5
    assert p.detach().tolist() == [0.5 - 0.5, 0.5 + 0.5, 0.5]


@pytest.mark.parametrize("bad", ["bogus", "ADAMX", 3])
def test_an_unknown_schedule_gets_the_sentence_naming_it(bad):
    """Constructor and add_param_group both name the unknown value and the way out."""
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=rf"Unknown beta2_schedule {bad!r}; choose one of \['adafactor', "):
        adamx.AdamX([p], beta2_schedule=bad)
    opt = adamx.AdamX([p])
    with pytest.raises(ValueError, match=rf"Unknown beta2_schedule {bad!r}; .*register_beta2_schedule"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "beta2_schedule": bad})


def test_defaults_hold_betas_as_a_float_tuple():
    """betas given as a list (as a YAML config gives them) are stored as a tuple of floats in defaults too."""
    p = torch.nn.Parameter(torch.ones(2))
    opt = adamx.AdamX([p], betas=[0, 0.5])
    assert opt.defaults["betas"] == (0.0, 0.5) and isinstance(opt.defaults["betas"], tuple)
    assert all(type(b) is float for b in opt.defaults["betas"])
    assert opt.param_groups[0]["betas"] == (0.0, 0.5)


def _old_adamw_state(weight_decay: float) -> dict:
    """An AdamW state_dict as torch < 2.6 wrote it: no decoupled_weight_decay key in the group."""
    group = dict(lr=0.1, betas=(0.5, 0.75), eps=1e-3, weight_decay=weight_decay, amsgrad=False,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, params=[0])  # fmt: skip
    state = {
        0: {"step": torch.tensor(2.0), "exp_avg": torch.tensor([1.0]), "exp_avg_sq": torch.tensor([0.4375])}
    }
    return {"state": state, "param_groups": [group]}


@pytest.mark.parametrize("target", ["adam", "adamx"])
def test_an_adamw_state_without_the_decoupled_key_converts(target):
    """A group without decoupled_weight_decay is AdamW's (decoupled): converted, not refused, wd kept."""
    saved = _old_adamw_state(0.2)
    out = adamx.convert_state_dict(copy.deepcopy(saved), "torch.optim.AdamW", target)
    assert out["param_groups"][0]["weight_decay"] == 0.2
    assert out["state"][0]["exp_avg_sq"].tolist() == [1.0]  # 0.4375 / (1 - 0.75^2)


def test_a_coupled_adam_state_with_weight_decay_is_refused():
    """decoupled_weight_decay=False with wd != 0 is torch.optim.Adam's L2 penalty: refused by name."""
    saved = _old_adamw_state(0.2)
    saved["param_groups"][0]["decoupled_weight_decay"] = False
    with pytest.raises(ValueError, match=r"weight_decay=0.2 added to the gradient"):
        adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")
    saved["param_groups"][0]["weight_decay"] = 0.0  # no penalty: nothing to disagree about
    assert (
        adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")["param_groups"][0]["weight_decay"]
        == 0.0
    )
