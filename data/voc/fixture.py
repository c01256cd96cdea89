"""A tiny VOCdevkit in the real on-disk layout: JPEGs of coloured rectangles and ellipses plus VOC XML.

    VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}
    VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main/trainval.txt}

Each class has its own colour and shape, so a detector can learn them from a handful of images. Every
fifth object (counting from the fourth) is ``difficult``; every fifth from the fifth has no
``<difficult>`` tag at all (which means 0).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "car", "person")
PALETTE = [(220, 40, 40), (40, 170, 40), (40, 70, 220), (230, 190, 30), (180, 50, 200), (30, 190, 200)]


def _style(class_pos: int) -> tuple[tuple[int, int, int], str]:
    """Colour and shape of the ``class_pos``-th fixture class (distinct pairs for the first 12)."""
    colour = PALETTE[class_pos % len(PALETTE)]
    shape = "rectangle" if (class_pos + class_pos // len(PALETTE)) % 2 == 0 else "ellipse"
    return colour, shape


def _place(rng: np.random.Generator, w: int, h: int, taken: list[list[int]]) -> list[int] | None:
    """A random box (1-based inclusive VOC coordinates) overlapping no box in ``taken``."""
    for _ in range(50):
        bw = int(rng.integers(w // 5, w // 2))
        bh = int(rng.integers(h // 5, h // 2))
        x1 = int(rng.integers(1, w - bw))
        y1 = int(rng.integers(1, h - bh))
        box = [x1, y1, x1 + bw, y1 + bh]
        if all(
            box[2] < t[0] - 2 or box[0] > t[2] + 2 or box[3] < t[1] - 2 or box[1] > t[3] + 2 for t in taken
        ):
            return box
    return None


def _write_xml(path: Path, folder: str, filename: str, w: int, h: int, objects: list[dict]) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        if obj["difficult"] is not None:
            ET.SubElement(node, "difficult").text = str(obj["difficult"])
        bndbox = ET.SubElement(node, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(bndbox, key).text = str(value)
    ET.ElementTree(root).write(path)


def write_voc(
    root: Path,
    n_trainval07: int = 8,
    n_test07: int = 4,
    n_trainval12: int = 4,
    classes: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 3,
    size_range: tuple[int, int] = (96, 160),
    seed: int = 0,
) -> Path:
    """Write the tiny VOCdevkit under ``root`` and return ``root`` (the folder holding ``VOCdevkit``)."""
    rng = np.random.default_rng(seed)
    counter = 0
    splits = [
        ("VOC2007", "trainval", n_trainval07, ""),
        ("VOC2007", "test", n_test07, ""),
        ("VOC2012", "trainval", n_trainval12, "2012_"),
    ]
    numbering = {"VOC2007": 0, "VOC2012": 0}
    for folder, image_set, count, prefix in splits:
        base = Path(root) / "VOCdevkit" / folder
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        ids = []
        for _ in range(count):
            numbering[folder] += 1
            stem = f"{prefix}{numbering[folder]:06d}"
            w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            background = tuple(int(v) for v in rng.integers(150, 240, size=3))
            img = Image.new("RGB", (w, h), background)
            draw = ImageDraw.Draw(img)
            objects: list[dict] = []
            for _ in range(int(rng.integers(1, max_objects + 1))):
                box = _place(rng, w, h, [o["box"] for o in objects])
                if box is None:
                    continue
                pos = int(rng.integers(len(classes)))
                colour, shape = _style(pos)
                xy = [box[0] - 1, box[1] - 1, box[2] - 1, box[3] - 1]  # 1-based inclusive -> PIL pixels
                getattr(draw, shape)(xy, fill=colour, outline=(20, 20, 20))
                difficult = {3: 1, 4: None}.get(counter % 5, 0)
                objects.append({"name": classes[pos], "box": box, "difficult": difficult})
                counter += 1
            img.save(base / "JPEGImages" / f"{stem}.jpg", quality=95)
            _write_xml(base / "Annotations" / f"{stem}.xml", folder, f"{stem}.jpg", w, h, objects)
            ids.append(stem)
        (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in ids))
    return Path(root)


def _edit_xml(path: Path, edit) -> None:
    tree = ET.parse(path)
    edit(tree.getroot())
    tree.write(path)


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def break_voc(root: Path) -> dict[str, str]:
    """Plant one defect per file in the fixture ``write_voc(root)`` wrote (default sizes); return
    {path of the bad file: a phrase its problem report must contain}."""
    base07, base12 = Path(root) / "VOCdevkit" / "VOC2007", Path(root) / "VOCdevkit" / "VOC2012"
    xml = lambda base, n, prefix="": base / "Annotations" / f"{prefix}{n:06d}.xml"  # noqa: E731
    jpg = lambda base, n, prefix="": base / "JPEGImages" / f"{prefix}{n:06d}.jpg"  # noqa: E731
    expected: dict[str, str] = {}

    text = xml(base07, 1).read_text()
    xml(base07, 1).write_text(text[: text.index("<object>") + 12])  # cut inside a tag
    expected[str(xml(base07, 1))] = "is not parsable XML"
    _edit_xml(xml(base07, 2), lambda r: r.remove(r.find("size")))
    expected[str(xml(base07, 2))] = "has no <size>"
    _edit_xml(xml(base07, 3), lambda r: r.find("object").remove(r.find("object/bndbox")))
    expected[str(xml(base07, 3))] = "has no <bndbox>"

    def set_difficult(r):
        obj = r.find("object")
        node = obj.find("difficult")
        if node is None:
            node = ET.SubElement(obj, "difficult")
        node.text = "maybe"

    _edit_xml(xml(base07, 4), set_difficult)
    expected[str(xml(base07, 4))] = "has <difficult> 'maybe', not 0 or 1"
    _edit_xml(xml(base07, 5), lambda r: setattr(r.find("object/name"), "text", "unicorn"))
    expected[str(xml(base07, 5))] = "unknown VOC class 'unicorn'"

    def outside(r):
        width = int(r.find("size/width").text)
        r.find("object/bndbox/xmax").text = str(width + 40)

    _edit_xml(xml(base07, 6), outside)
    expected[str(xml(base07, 6))] = "image (or inverted)"
    _truncate(jpg(base07, 7))
    expected[str(jpg(base07, 7))] = "is not a readable image (image file is truncated"

    def wider(r):
        r.find("size/width").text = str(int(r.find("size/width").text) + 10)

    _edit_xml(xml(base12, 1, "2012_"), wider)
    expected[str(xml(base12, 1, "2012_"))] = "gives size"
    jpg(base12, 2, "2012_").unlink()
    expected[str(jpg(base12, 2, "2012_"))] = "is missing"
    test_list = base07 / "ImageSets" / "Main" / "test.txt"
    ids = test_list.read_text().split()
    test_list.write_text("".join(f"{i}\n" for i in [*ids, ids[0]]))
    expected[str(test_list)] = f"lists {ids[0]} 2 times"
    return expected
