"""ConvNeXt-B for 32x32 CIFAR images: torchvision's model with 3x3 convolutions throughout.

As the paper adapts it: the 4x4 stride-4 patchify stem becomes a 3x3 stride-1 conv (padding 1),
every block's 7x7 depthwise conv a 3x3 one (padding 1), and the three 2x2 stride-2 downsampling
convs 3x3 stride-2 convs (padding 1), so 32 -> 16 -> 8 -> 4. Replaced convs get torchvision's
ConvNeXt initialisation (weights trunc-normal std 0.02, biases zero). Every LayerNorm has eps 1e-5
as in the authors' convnext.py (``nn.LayerNorm``/``LayerNorm2d`` built without an eps), not torchvision's
1e-6. The rest is torchvision's convnext_base, stochastic depth 0.5 included, without pretrained weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import ConvNeXt, convnext_base
from torchvision.models.convnext import CNBlock

LN_EPS = 1e-5  # nn.LayerNorm's default, which the authors' copy keeps (torchvision's builder passes 1e-6)


def _conv3x3(old: nn.Conv2d, stride: int) -> nn.Conv2d:
    """A 3x3 conv (padding 1) with ``old``'s channels and groups, initialised as torchvision's ConvNeXt."""
    conv = nn.Conv2d(
        old.in_channels, old.out_channels, 3, stride=stride, padding=1, groups=old.groups, bias=True
    )
    nn.init.trunc_normal_(conv.weight, std=0.02)
    nn.init.zeros_(conv.bias)
    return conv


def cifar_adapt(model: ConvNeXt) -> ConvNeXt:
    """Swap the stem, every depthwise conv and every downsampling conv of ``model`` for 3x3 ones, in place."""
    stem = model.features[0]
    stem[0] = _conv3x3(stem[0], stride=1)
    for module in model.modules():
        if isinstance(module, CNBlock):
            module.block[0] = _conv3x3(module.block[0], stride=1)
    downsamples = [
        layer
        for layer in model.features[1:]
        if isinstance(layer, nn.Sequential)
        and isinstance(layer[-1], nn.Conv2d)
        and layer[-1].stride == (2, 2)
    ]
    if len(downsamples) != 3:
        raise ValueError(f"Expected torchvision's 3 ConvNeXt downsampling layers, found {len(downsamples)}.")
    for layer in downsamples:
        layer[-1] = _conv3x3(layer[-1], stride=2)
    return model


def authors_layernorm(model: nn.Module) -> nn.Module:
    """Set eps of every LayerNorm (LayerNorm2d included) of ``model`` to the authors' 1e-5, in place."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = LN_EPS
    return model


def convnext_b(num_classes: int = 100, **kwargs: Any) -> ConvNeXt:
    """CIFAR ConvNeXt-B (Table 12); ``kwargs`` go to torchvision (stochastic_depth_prob, ...)."""
    return authors_layernorm(cifar_adapt(convnext_base(weights=None, num_classes=num_classes, **kwargs)))
