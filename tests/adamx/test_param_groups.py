"""``adamx.decay_param_groups`` follows the authors' ``separate_params_v2``: decay exactly the weights of
``isinstance(m, (nn.Conv2d, nn.Linear))``; biases, norms, transposed/1-d convs and embeddings get none."""

from __future__ import annotations

from torch import nn

from adamx import decay_param_groups
from models import build_model


def _split(model: nn.Module) -> tuple[set[int], set[int]]:
    groups = decay_param_groups(model, 0.01)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, plain


def test_exactly_conv2d_and_linear_weights_are_decayed() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ConvTranspose2d(4, 4, 2, stride=2),
        nn.Conv1d(4, 4, 1),
        nn.Embedding(10, 4),
        nn.LayerNorm(4),
        nn.Linear(4, 2),
    )
    decayed, plain = _split(model)
    assert decayed == {id(model[0].weight), id(model[6].weight)}
    others = {id(p) for p in model.parameters()} - decayed
    assert plain == others  # every other parameter once, with weight decay 0
    assert id(model[2].weight) in plain and id(model[3].weight) in plain and id(model[4].weight) in plain


def test_linear_subclasses_count_and_shared_weights_appear_once() -> None:
    attn = nn.MultiheadAttention(8, 2)  # out_proj is a Linear subclass; in_proj_weight a bare Parameter
    head = nn.Linear(8, 8)
    model = nn.ModuleDict({"attn": attn, "a": head, "b": head})
    decayed, plain = _split(model)
    assert decayed == {id(attn.out_proj.weight), id(head.weight)}
    assert id(attn.in_proj_weight) in plain


def test_unet_transposed_convs_are_not_decayed() -> None:
    model = build_model("unet", num_classes=21)
    decayed, plain = _split(model)
    transposed = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert transposed and convs
    assert all(id(m.weight) in plain and id(m.weight) not in decayed for m in transposed)
    assert decayed == {id(m.weight) for m in convs}
