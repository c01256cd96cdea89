"""Weight-decay param groups by the authors' rule (``separate_params_v2`` in their released scripts):
decay on the ``weight`` of every ``nn.Conv2d`` and ``nn.Linear`` (subclasses included), nothing else."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Exactly the authors' isinstance test: ConvTranspose2d (U-Net's up-sampling), Conv1d/Conv3d and
# Embedding are NOT decayed, nor is any bias, norm scale or free-standing parameter.
_MATRIX_MODULES = (nn.Conv2d, nn.Linear)


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two param groups: ``weight`` of every Conv2d/Linear module with ``weight_decay``, all other trainable
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
