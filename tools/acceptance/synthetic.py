"""Synthetic batches shaped like each task's: CIFAR 32x32 classification, VOC 320x320 with boxes, SBD
320x320 masks (smaller in --tiny), already on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Spec:
    """A paper model and the task it trains on, with its batch and input size for this run."""

    model: str
    task: str
    batch: int
    size: int
    num_classes: int
    model_kwargs: dict[str, Any]
    optional: bool = False  # run after the data check, while --deadline-s allows


def specs(tiny: bool) -> list[Spec]:
    if tiny:  # the code paths at toy sizes; digits_cnn stands in for the four CIFAR models
        return [
            Spec("digits_cnn", "classification", 4, 32, 100, {"in_channels": 3}),
            Spec("yolov7_tiny", "detection", 2, 64, 20, {}),
            Spec("unet", "segmentation", 2, 32, 21, {"base": 8}),
        ]
    return [
        Spec("efficientnetv2_m", "classification", 64, 32, 100, {}),
        Spec("swinv2_s", "classification", 64, 32, 100, {}),
        Spec("convnext_b", "classification", 64, 32, 100, {}),
        Spec("yolov7_tiny", "detection", 32, 320, 20, {}),
        Spec("unet", "segmentation", 32, 320, 21, {}),  # compiled by default: it goes after the others
        Spec("efficientnetv2_l", "classification", 64, 32, 100, {}, optional=True),
    ]


def task_kwargs(spec: Spec) -> dict[str, Any]:
    if spec.task == "classification":
        return {"num_classes": spec.num_classes}
    if spec.task == "detection":  # no pycocotools on the device machine: VOC mAP only
        return {"num_classes": spec.num_classes, "img_size": spec.size, "coco_metrics": False}
    return {"num_classes": spec.num_classes, "img_size": spec.size}


def batch(spec: Spec, device: torch.device, seed: int = 0, channels_last: bool = False) -> tuple:
    """One training batch on ``device`` (targets/masks in the task's layout; detection metas for eval)."""
    g = torch.Generator().manual_seed(seed)
    b, s = spec.batch, spec.size
    images = torch.rand(b, 3, s, s, generator=g)
    if spec.task == "classification":
        images = (images - 0.5) / 0.5
    images = images.to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if spec.task == "classification":
        return images, torch.randint(0, spec.num_classes, (b,), generator=g).to(device)
    if spec.task == "segmentation":
        masks = torch.randint(0, spec.num_classes, (b, s, s), generator=g)
        masks[:, :2] = 255  # an ignored border, as SBD's
        return images, masks.to(device)
    rows, metas = [], []
    for i in range(b):
        n = 3
        wh = torch.rand(n, 2, generator=g) * s * 0.4 + s * 0.05
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (s - wh)
        cls = torch.randint(0, spec.num_classes, (n, 1), generator=g).float()
        rows.append(torch.cat([torch.full((n, 1), float(i)), cls, xy, wh], 1))
        xyxy = torch.cat([xy - wh / 2, xy + wh / 2], 1).numpy().astype(np.float64)
        metas.append(
            {
                "image_id": f"{seed}_{i}",
                "boxes": xyxy,
                "labels": cls[:, 0].long().numpy(),
                "difficult": np.zeros(n, dtype=bool),
                "pad": (0, 0),
                "scale": 1.0,
                "orig_size": (s, s),
            }
        )
    return images, torch.cat(rows).to(device), metas
