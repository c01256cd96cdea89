"""EfficientNetV2-M/L for 32x32 CIFAR images: torchvision's models with two downsamplings removed.

As the paper adapts them: the stem conv and the first stride-2 stage run at stride 1, so three
downsamplings remain (32 -> 16 -> 8 -> 4). BatchNorm is the authors' (their efficientnet.py builds
every one as ``partial(nn.BatchNorm2d, momentum=0.01)``, so eps 1e-5), not torchvision's eps 1e-3 with
momentum 0.1. Everything else is torchvision's: blocks, widths, dropout (M 0.3, L 0.4), stochastic
depth 0.2 and default initialisation (no pretrained weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models import EfficientNet, efficientnet_v2_l, efficientnet_v2_m

BN_MOMENTUM = 0.01  # the authors' partial(nn.BatchNorm2d, momentum=0.01)
BN_EPS = 1e-5  # nn.BatchNorm2d's default, which the authors keep (torchvision's V2 uses 1e-3)


def _stride_two_conv(block: nn.Module) -> nn.Conv2d | None:
    """The block's stride-2 conv (FusedMBConv: its first conv; MBConv: its depthwise conv), if any."""
    return next((m for m in block.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)), None)


def cifar_adapt(model: EfficientNet) -> EfficientNet:
    """Set the stem and the first stride-2 stage of ``model`` to stride 1, in place."""
    stem = model.features[0][0]
    if stem.stride != (2, 2):
        raise ValueError(f"Expected torchvision's stride-2 stem, found stride {stem.stride}.")
    stem.stride = (1, 1)
    for stage in model.features[1:-1]:
        conv = _stride_two_conv(stage[0])
        if conv is not None:  # padding stays (k - 1) // 2, so stride 1 keeps the size
            conv.stride = (1, 1)
            return model
    raise ValueError("No stride-2 stage found in the EfficientNet; is this torchvision's EfficientNetV2?")


def authors_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm2d of ``model`` the authors' momentum and eps, in place (neither holds state)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum, module.eps = BN_MOMENTUM, BN_EPS
    return model


def _build(factory: Callable[..., EfficientNet], num_classes: int, **kwargs: Any) -> EfficientNet:
    return authors_batchnorm(cifar_adapt(factory(weights=None, num_classes=num_classes, **kwargs)))


def efficientnetv2_m(num_classes: int = 100, **kwargs: Any) -> EfficientNet:
    """CIFAR EfficientNetV2-M (Tables 3 and 7); ``kwargs`` go to torchvision (dropout, ...)."""
    return _build(efficientnet_v2_m, num_classes, **kwargs)


def efficientnetv2_l(num_classes: int = 100, **kwargs: Any) -> EfficientNet:
    """CIFAR EfficientNetV2-L (Table 11); ``kwargs`` go to torchvision (dropout, ...)."""
    return _build(efficientnet_v2_l, num_classes, **kwargs)
