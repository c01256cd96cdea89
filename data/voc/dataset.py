"""PASCAL VOC detection: train on VOC2007 trainval + VOC2012 trainval (16,551 images), test on VOC2007
test (4,952), all read through ``torchvision.datasets.VOCDetection`` and letterboxed to ``img_size``.

An item is ``(image uint8 (3, S, S), (targets float (n, 5) [class, cx, cy, w, h] in canvas pixels, meta))``
(the pair because ``VOCDetection`` unpacks its ``transforms`` into two);
``meta`` holds what evaluation needs to map detections back (``orig_size`` (h, w), ``scale``, ``pad``
(left, top)) and the original ground truth (``boxes`` xyxy, ``labels``, ``difficult``) plus ``image_id``
(``VOC2007/000001``, from the image's path). VOC's 1-based inclusive pixel boxes become continuous
``[xmin - 1, xmax]``, so IoUs equal the devkit's. A bad file (unparsable XML, a missing field, an unknown
class, a box outside the image, a truncated JPEG, XML size not the image's) raises ``DataFileError``
naming it when the item is read; ``scripts/check_data.py dataset=voc`` finds them all up front.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset
from torchvision.datasets import VOCDetection

from data import DatasetBundle, DatasetNotFoundError
from data.voc.augment import AugmentConfig, letterbox
from data.voc.reader import ENV_VAR, SPLITS, VOC_CLASSES, read_item, resolve_root


class CheckedVOCDetection(VOCDetection):
    """torchvision's ``VOCDetection`` whose items pass ``read_item``: every unreadable or inconsistent
    file fails with one sentence naming it, and ``transforms`` receive the parsed annotation."""

    def __getitem__(self, index: int):
        img, gt = read_item(self.images[index], self.annotations[index])
        return self.transforms(img, gt) if self.transforms is not None else (img, gt)


class LetterboxTransform:
    """``CheckedVOCDetection``'s ``transforms``: (PIL image, parsed annotation) -> (image, (targets, meta))."""

    def __init__(self, img_size: int, augment: AugmentConfig | None, keep_difficult: bool) -> None:
        self.img_size = img_size
        self.augment = augment
        self.keep_difficult = keep_difficult

    def __call__(self, img, gt: dict[str, Any]) -> tuple[torch.Tensor, tuple[torch.Tensor, dict[str, Any]]]:
        h, w = img.height, img.width
        canvas, boxes, keep, geometry = letterbox(img, gt["boxes"], self.img_size, self.augment)
        if not self.keep_difficult:
            keep &= ~gt["difficult"]
        boxes, labels = boxes[keep], gt["labels"][keep]
        targets = np.concatenate(
            [labels[:, None], (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1
        ).astype(np.float32)
        image = torch.from_numpy(np.array(canvas, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        meta = {**gt, "orig_size": (h, w), **geometry}
        return image, (torch.from_numpy(targets), meta)


def _split_file(path: Path, year: str, image_set: str) -> Path:
    return path / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt"


def _check(path: Path, splits: list[tuple[str, str]]) -> None:
    for year, image_set in splits:
        split_file = _split_file(path, year, image_set)
        if not split_file.is_file():
            raise DatasetNotFoundError(
                f"PASCAL VOC not found: {split_file.resolve()} is missing. Put VOCdevkit/VOC2007 (trainval and "
                f"test) and VOCdevkit/VOC2012 (trainval) under {path.resolve()}, or point dataset.root (or "
                f"${ENV_VAR}) at the folder holding VOCdevkit, or set dataset.download=true to fetch the three "
                "archives (~3.6 GB)."
            )


def build(
    root: str | os.PathLike | None = None,
    download: bool = False,
    img_size: int = 320,
    augment: bool = True,
    keep_difficult: bool = False,
    **kwargs: Any,
) -> DatasetBundle:
    """VOC07+12 trainval for training, VOC07 test for evaluation.

    ``keep_difficult=False`` drops difficult objects from the training targets, as YOLO's VOC labels do;
    evaluation always sees them (flagged) in ``meta`` so the mAP can ignore them.
    """
    if kwargs:
        raise ValueError(
            f"Unknown VOC options {sorted(kwargs)}; known: root, download, img_size, augment, keep_difficult."
        )
    if img_size % 32:
        raise ValueError(f"img_size={img_size} must be a multiple of 32 (YOLOv7-tiny's largest stride).")
    path = resolve_root(root)
    if download:
        path.mkdir(parents=True, exist_ok=True)
    else:
        _check(path, SPLITS["train"] + SPLITS["eval"])
    train_tf = LetterboxTransform(img_size, AugmentConfig() if augment else None, keep_difficult)
    eval_tf = LetterboxTransform(img_size, None, keep_difficult=True)

    def split(name: str, tf: LetterboxTransform) -> ConcatDataset:
        return ConcatDataset(
            [
                # fetch (and extract) an archive only while its split is missing
                CheckedVOCDetection(
                    str(path), year=y, image_set=s, transforms=tf,
                    download=download and not _split_file(path, y, s).is_file(),
                )
                for y, s in SPLITS[name]
            ]
        )  # fmt: skip

    train, test = split("train", train_tf), split("eval", eval_tf)
    info = {"class_names": list(VOC_CLASSES), "img_size": img_size, "root": str(path)}
    return DatasetBundle(train=train, eval=test, num_classes=len(VOC_CLASSES), info=info)
