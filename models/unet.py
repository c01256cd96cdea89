"""U-Net (Ronneberger et al. 2015) as the paper uses it for SBD: base width 32, 21 classes, RegNet init.

Four max-pool downs (32-64-128-256-512 channels), four 2x2 stride-2 transposed-conv ups with skip
concatenation, and a 1x1 head. Convolutions use padding 1, so the output has the input's size; for
sizes not divisible by 16 each upsampled map is zero-padded to its skip's size before the concat.
At base 32 and 21 classes it has 7,763,701 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.init import regnet_init_


class DoubleConv(nn.Sequential):
    """(3x3 conv without bias, BatchNorm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """2x2 stride-2 transposed conv halving the channels, pad to the skip's size, concat, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net returning per-pixel class logits (B, num_classes, H, W) for images (B, 3, H, W)."""

    def __init__(self, num_classes: int = 21, base: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or base < 1:
            raise ValueError(
                f"UNet needs num_classes >= 1 and base >= 1, got num_classes={num_classes}, base={base}."
            )
        widths = [base * 2**i for i in range(5)]  # 32, 64, 128, 256, 512 at base 32
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        regnet_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
