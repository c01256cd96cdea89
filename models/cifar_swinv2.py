"""SwinV2-S for 32x32 CIFAR images: torchvision's SwinTransformer V2 with patch size 1 and window 4.

swin_v2_s fixes patch 4 and window 8, so the model is built through torchvision's SwinTransformer
class with swin_v2_s's other settings (embed 96, depths 2-2-18-2, heads 3-6-12-24, V2 blocks and
patch merging, stochastic depth 0.3) and its default initialisation, without pretrained weights.
Stages run at 32, 16, 8 and 4 pixels; the last stage is one 4x4 window.
"""

from __future__ import annotations

from typing import Any

from torchvision.models import SwinTransformer
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2


def swinv2_s(num_classes: int = 100, stochastic_depth_prob: float = 0.3, **kwargs: Any) -> SwinTransformer:
    """CIFAR SwinV2-S (Tables 4 and 8); ``kwargs`` go to torchvision's SwinTransformer."""
    return SwinTransformer(
        patch_size=[1, 1],
        embed_dim=96,
        depths=[2, 2, 18, 2],
        num_heads=[3, 6, 12, 24],
        window_size=[4, 4],
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=num_classes,
        block=SwinTransformerBlockV2,
        downsample_layer=PatchMergingV2,
        **kwargs,
    )
