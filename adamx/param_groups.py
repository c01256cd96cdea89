"""Weight-decay param groups by the authors' rule: decay on the weights of conv and linear layers only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_MATRIX_MODULES = (nn.modules.conv._ConvNd, nn.Linear)


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two param groups: ``weight`` of every Conv*/Linear module with ``weight_decay``, all other trainable
    parameters (biases, norm scales, embeddings, position tables, ...) with 0. Shared parameters appear once;
    empty groups are left out. Each group carries its own ``weight_decay``, which wins over the optimizer's."""
    decay: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, _MATRIX_MODULES) and isinstance(getattr(module, "weight", None), nn.Parameter):
            if module.weight.requires_grad:
                decay[id(module.weight)] = module.weight
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) not in decay]
    groups = [
        {"params": list(decay.values()), "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
