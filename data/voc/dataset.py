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
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset
from torchvision.datasets import VOCDetection

from data import DatasetBundle, DatasetNotFoundError
from data.files import bad_file, open_jpeg
from data.voc.augment import AugmentConfig, letterbox

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
SPLITS = {"train": [("2007", "trainval"), ("2012", "trainval")], "eval": [("2007", "test")]}
ENV_VAR = "VOC_ROOT"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_annotation(annotation: dict[str, Any], source: str | os.PathLike = "annotation") -> dict[str, Any]:
    """torchvision's annotation dict -> ``boxes`` float32 (n, 4) xyxy, ``labels`` int64, ``difficult`` bool,
    ``orig_size`` (h, w). Anything a loader cannot trust raises ``DataFileError`` naming ``source``."""
    ann = annotation.get("annotation") if isinstance(annotation, dict) else None
    size = ann.get("size") if isinstance(ann, dict) else None
    width = _number(size.get("width")) if isinstance(size, dict) else None
    height = _number(size.get("height")) if isinstance(size, dict) else None
    if not width or not height or width < 1 or height < 1:
        raise bad_file(source, "has no <size> with a positive numeric <width> and <height>")
    objects = ann.get("object", [])
    if isinstance(objects, dict):
        objects = [objects]
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(objects, start=1):
        name = (
            obj.get("name", "").strip() if isinstance(obj, dict) and isinstance(obj.get("name"), str) else ""
        )
        if name not in CLASS_INDEX:
            raise bad_file(
                source,
                f"object {k} has unknown VOC class {name!r} (expected one of {', '.join(VOC_CLASSES)})",
            )
        bb = obj.get("bndbox")
        coords = (
            [_number(bb.get(key)) for key in ("xmin", "ymin", "xmax", "ymax")] if isinstance(bb, dict) else []
        )
        if len(coords) != 4 or None in coords:
            raise bad_file(source, f"object {k} ({name}) has no <bndbox> with numeric xmin, ymin, xmax, ymax")
        xmin, ymin, xmax, ymax = coords
        if not (0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height):
            raise bad_file(
                source,
                f"object {k} ({name}) has box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) outside the "
                f"{width:g}x{height:g} image (or inverted)",
            )
        flag = obj.get("difficult", "0") or "0"
        if not isinstance(flag, str) or flag.strip() not in ("0", "1"):
            raise bad_file(source, f"object {k} ({name}) has <difficult> {flag!r}, not 0 or 1")
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(CLASS_INDEX[name])
        difficult.append(flag.strip() == "1")
    return {
        "orig_size": (int(height), int(width)),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "difficult": np.asarray(difficult, dtype=bool),
    }


def read_annotation(path: str | os.PathLike) -> dict[str, Any]:
    """Parse the VOC XML at ``path`` (``parse_annotation``'s checks included), naming it in any error."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as err:
        raise bad_file(path, "is missing", "copy it from the original archive") from err
    except (ET.ParseError, OSError) as err:
        raise bad_file(path, f"is not parsable XML ({err})") from err
    return parse_annotation(VOCDetection.parse_voc_xml(root), path)


def image_id(image_path: str | os.PathLike) -> str:
    """``VOC2007/000001`` from ``.../VOC2007/JPEGImages/000001.jpg``: from the path, never from the XML's
    ``<folder>``/``<filename>`` (two annotations naming the same file would merge two images in the mAP)."""
    path = Path(image_path)
    return f"{path.parent.parent.name}/{path.stem}"


def read_item(image_path: str | os.PathLike, xml_path: str | os.PathLike, fast: bool = False):
    """The RGB image and its checked annotation (with ``image_id``); the XML's size must be the image's."""
    gt = read_annotation(xml_path)
    img = open_jpeg(image_path, fast=fast)
    check_size(gt, img, image_path, xml_path)
    gt["image_id"] = image_id(image_path)
    return img, gt


def check_size(gt: dict[str, Any], img, image_path: str | os.PathLike, xml_path: str | os.PathLike) -> None:
    """The annotation's <size> must be the JPEG's (boxes are checked against it)."""
    w, h = img.info.get("original_size", img.size)
    if (h, w) != gt["orig_size"]:
        raise bad_file(
            xml_path,
            f"gives size {gt['orig_size'][1]}x{gt['orig_size'][0]} but {Path(image_path).name} is {w}x{h}",
        )


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


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The folder holding ``VOCdevkit`` (a path to ``VOCdevkit`` itself is accepted too)."""
    if root in (None, ""):
        root = os.environ.get(ENV_VAR) or "datasets/voc"
    path = Path(root).expanduser()
    if path.name == "VOCdevkit":
        path = path.parent
    return path


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
