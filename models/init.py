"""RegNet's weight initialisation (pycls), which the paper uses for YOLOv7-tiny and U-Net.

Conv (and transposed-conv) weights ~ N(0, sqrt(2 / fan_out)) with fan_out = kh * kw * out_channels,
biases 0; BatchNorm gamma = 1, beta = 0; Linear weights ~ N(0, 0.01), biases 0.
"""

from __future__ import annotations

import math

from torch import nn


def regnet_init_(model: nn.Module) -> nn.Module:
    """Initialise every conv, transposed conv, norm and linear layer of ``model`` in place."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            fan_out = math.prod(module.kernel_size) * module.out_channels
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
