"""YOLOv7-tiny (the official ``cfg/training/yolov7-tiny.yaml`` layout) as a plain nn.Module.

Backbone: two stride-2 convs, then ELAN-tiny blocks separated by 2x2 max-pools (strides 4..32).
Neck: SPPCSPC-tiny on the stride-32 map, a top-down path to stride 8, a bottom-up path back to 32.
Head: a 3x3 conv per level (128/256/512 channels) and an IDetect head (implicit add, 1x1 conv with
bias, implicit multiply), 3 anchors per level. ``forward`` returns the raw level tensors
(B, 3, H/s, W/s, 5 + classes) in train and eval mode alike; decoding lives in
``experiments/tasks/detection/postprocess.py``.

Written from the layer table of WongKinYiu/yolov7 (GPL-3.0, read for facts only).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.init import regnet_init_

# The anchors the issue fixes (YOLOv3/v5/v7's COCO anchors, in input pixels), one row per level.
DEFAULT_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),  # P3, stride 8
    ((30, 61), (62, 45), (59, 119)),  # P4, stride 16
    ((116, 90), (156, 198), (373, 326)),  # P5, stride 32
)


class Conv(nn.Sequential):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1), 'same' padding.

    BatchNorm uses eps=1e-3 and momentum=0.03, the values YOLOv7's ``initialize_weights`` sets.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, padding=k // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03),
            nn.LeakyReLU(0.1, inplace=True),
        )


class ELANTiny(nn.Module):
    """Two 1x1 branches of ``c_mid``, two chained 3x3 convs on the second, concat of four, 1x1 to ``c_out``."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.branch1 = Conv(c_in, c_mid, 1)
        self.branch2 = Conv(c_in, c_mid, 1)
        self.conv3 = Conv(c_mid, c_mid, 3)
        self.conv4 = Conv(c_mid, c_mid, 3)
        self.fuse = Conv(4 * c_mid, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1(x)
        b = self.branch2(x)
        c = self.conv3(b)
        d = self.conv4(c)
        return self.fuse(torch.cat([d, c, b, a], dim=1))  # the official concat order


class SPPCSPCTiny(nn.Module):
    """SPPCSPC-tiny: a 1x1 shortcut branch and a 1x1 branch max-pooled at 5/9/13, merged by two 1x1 convs."""

    def __init__(self, c_in: int, c: int, pools: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        self.shortcut = Conv(c_in, c, 1)
        self.reduce = Conv(c_in, c, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in pools)
        self.spp_fuse = Conv(c * (len(pools) + 1), c, 1)
        self.fuse = Conv(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(x)
        pooled = [pool(y) for pool in self.pools]
        y = self.spp_fuse(torch.cat([*reversed(pooled), y], dim=1))  # official order: 13, 9, 5, input
        return self.fuse(torch.cat([y, self.shortcut(x)], dim=1))


class Backbone(nn.Module):
    """Stem to stride 4, then ELAN-tiny stages at strides 4, 8, 16, 32; returns the stride 8/16/32 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(Conv(3, 32, 3, 2), Conv(32, 64, 3, 2))
        self.stage2 = ELANTiny(64, 32, 64)
        self.pool = nn.MaxPool2d(2, 2)
        self.stage3 = ELANTiny(64, 64, 128)
        self.stage4 = ELANTiny(128, 128, 256)
        self.stage5 = ELANTiny(256, 256, 512)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stage2(self.stem(x))
        c3 = self.stage3(self.pool(x))  # 128 channels, stride 8
        c4 = self.stage4(self.pool(c3))  # 256 channels, stride 16
        c5 = self.stage5(self.pool(c4))  # 512 channels, stride 32
        return c3, c4, c5


class Neck(nn.Module):
    """SPPCSPC-tiny, then top-down (32 -> 16 -> 8) and bottom-up (8 -> 16 -> 32) paths; 64/128/256 channels out."""

    def __init__(self) -> None:
        super().__init__()
        self.spp = SPPCSPCTiny(512, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        # top-down
        self.reduce5 = Conv(256, 128, 1)
        self.lateral4 = Conv(256, 128, 1)
        self.td4 = ELANTiny(256, 64, 128)
        self.reduce4 = Conv(128, 64, 1)
        self.lateral3 = Conv(128, 64, 1)
        self.td3 = ELANTiny(128, 32, 64)
        # bottom-up
        self.down3 = Conv(64, 128, 3, 2)
        self.bu4 = ELANTiny(256, 64, 128)
        self.down4 = Conv(128, 256, 3, 2)
        self.bu5 = ELANTiny(512, 128, 256)

    def forward(
        self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p5 = self.spp(c5)
        t4 = self.td4(torch.cat([self.lateral4(c4), self.up(self.reduce5(p5))], dim=1))
        p3 = self.td3(torch.cat([self.lateral3(c3), self.up(self.reduce4(t4))], dim=1))
        p4 = self.bu4(torch.cat([self.down3(p3), t4], dim=1))
        p5 = self.bu5(torch.cat([self.down4(p4), p5], dim=1))
        return p3, p4, p5


class ImplicitAdd(nn.Module):
    """YOLOR's implicit knowledge added to a feature map: a learned per-channel offset, init N(0, 0.02)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.implicit


class ImplicitMul(nn.Module):
    """YOLOR's implicit knowledge multiplied into a feature map: a learned per-channel scale, init N(1, 0.02)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1).normal_(1.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.implicit


class IDetect(nn.Module):
    """Per level: implicit add, 1x1 conv (with bias) to anchors x (5 + classes), implicit multiply, reshape."""

    def __init__(self, in_channels: tuple[int, ...], num_anchors: int, num_classes: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_outputs = 5 + num_classes
        out = num_anchors * self.num_outputs
        self.implicit_add = nn.ModuleList(ImplicitAdd(c) for c in in_channels)
        self.convs = nn.ModuleList(nn.Conv2d(c, out, 1) for c in in_channels)
        self.implicit_mul = nn.ModuleList(ImplicitMul(out) for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, add, conv, mul in zip(features, self.implicit_add, self.convs, self.implicit_mul):
            y = mul(conv(add(x)))
            b, _, h, w = y.shape
            outputs.append(
                y.view(b, self.num_anchors, self.num_outputs, h, w).permute(0, 1, 3, 4, 2).contiguous()
            )
        return outputs


class YOLOv7Tiny(nn.Module):
    """YOLOv7-tiny for ``num_classes`` classes; ``forward(images)`` -> three raw (B, 3, H/s, W/s, 5 + classes) tensors.

    ``anchors`` (3 levels x 3 anchors x (w, h), input pixels) is a buffer, ``strides`` a tuple; the
    loss and the decoder read both from the model. ``img_size`` only sets the objectness bias prior.
    """

    def __init__(
        self,
        num_classes: int,
        anchors=DEFAULT_ANCHORS,
        strides: tuple[int, ...] = (8, 16, 32),
        img_size: int = 320,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors.ndim != 3 or anchors.shape[0] != 3 or anchors.shape[2] != 2:
            raise ValueError(
                f"anchors must have shape (3 levels, anchors per level, 2), got {tuple(anchors.shape)}; "
                "pass one row of (w, h) pairs per stride 8/16/32."
            )
        if tuple(strides) != (8, 16, 32):
            raise ValueError(f"YOLOv7-tiny's levels have strides (8, 16, 32), got {tuple(strides)}.")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.register_buffer("anchors", anchors)
        self.backbone = Backbone()
        self.neck = Neck()
        self.head_convs = nn.ModuleList([Conv(64, 128, 3), Conv(128, 256, 3), Conv(256, 512, 3)])
        self.detect = IDetect((128, 256, 512), anchors.shape[1], num_classes)
        regnet_init_(self)
        self._init_detect_biases(img_size)

    @torch.no_grad()
    def _init_detect_biases(self, img_size: int) -> None:
        """YOLO's priors: objectness for ~8 objects per image, class probability ~0.6 / (classes - 0.99).

        YOLOv7 writes log(8 / (640 / s)^2) for 640-pixel images; here the cell count is that of ``img_size``.
        """
        for conv, stride in zip(self.detect.convs, self.strides):
            bias = conv.bias.view(self.detect.num_anchors, -1)
            bias[:, 4] += math.log(8 / (img_size / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(
                f"YOLOv7-tiny needs (B, 3, H, W) images with H and W multiples of 32, got {tuple(images.shape)}; "
                "letterbox to e.g. 320x320."
            )
        p3, p4, p5 = self.neck(*self.backbone(images))
        features = [conv(p) for conv, p in zip(self.head_convs, (p3, p4, p5))]
        return self.detect(features)
