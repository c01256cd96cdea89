"""The VOC on-disk format: where the files are and how to read one annotation, torch-free (the loader and
``check.py`` share it, and ``scripts/check_data.py`` starts without importing torch).

Every reader raises ``DataFileError`` with one sentence naming the file: unparsable XML, a missing
``<size>``/``<bndbox>``, a ``<difficult>`` other than 0/1, an unknown class, a box outside the image, an
XML size unlike the JPEG's. Image ids come from the image's path, never from the XML.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from data.files import bad_file, open_jpeg

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
SPLITS = {"train": [("2007", "trainval"), ("2012", "trainval")], "eval": [("2007", "test")]}
ENV_VAR = "VOC_ROOT"


def xml_to_dict(node: ET.Element) -> dict[str, Any]:
    """An XML element as torchvision's ``VOCDetection.parse_voc_xml`` gives it: ``{tag: text}`` for a leaf,
    ``{tag: {child tag: value or [values]}}`` otherwise, and ``annotation.object`` always a list."""
    children = list(node)
    if not children:
        return {node.tag: (node.text or "").strip()}
    fields: dict[str, list[Any]] = {}
    for child in map(xml_to_dict, children):
        for tag, value in child.items():
            fields.setdefault(tag, []).append(value)
    if node.tag == "annotation":
        fields["object"] = [fields.get("object", [])]
    return {node.tag: {tag: v[0] if len(v) == 1 else v for tag, v in fields.items()}}


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
    return parse_annotation(xml_to_dict(root), path)


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


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The folder holding ``VOCdevkit`` (a path to ``VOCdevkit`` itself is accepted too)."""
    if root in (None, ""):
        root = os.environ.get(ENV_VAR) or "datasets/voc"
    path = Path(root).expanduser()
    if path.name == "VOCdevkit":
        path = path.parent
    return path
