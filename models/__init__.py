"""Model zoo of the harness: ``build_model(name, num_classes, **kwargs) -> nn.Module``.

Each entry maps a config name to ``"module:callable"``; the module is imported only when the
model is built, so a missing optional dependency of one model never breaks the others.
"""

from __future__ import annotations

import importlib

from torch import nn

MODELS: dict[str, str] = {
    "digits_cnn": "models.digits_cnn:DigitsCNN",
    "efficientnetv2_m": "models.cifar_efficientnetv2:efficientnetv2_m",
    "efficientnetv2_l": "models.cifar_efficientnetv2:efficientnetv2_l",
    "convnext_b": "models.cifar_convnext:convnext_b",
    "swinv2_s": "models.cifar_swinv2:swinv2_s",
    "yolov7_tiny": "models.yolov7_tiny:YOLOv7Tiny",
    "unet": "models.unet:UNet",
}


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` outputs."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    module_name, attr = MODELS[name].split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(num_classes=num_classes, **kwargs)
