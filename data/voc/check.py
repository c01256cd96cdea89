"""Every file of VOC07+12, checked before a sweep (``scripts/check_data.py dataset=voc``).

Each image listed in a split file is one item: its XML goes through the loader's own
``read_annotation`` and its JPEG through a full (1/8-scale) decode, so whatever this reports is what
training would have failed on hours later. The histogram counts objects per class, difficult included.
"""

from __future__ import annotations

from pathlib import Path

from data.files import CheckPlan, FileReport, open_jpeg, read_split_ids
from data.voc.reader import SPLITS, VOC_CLASSES, check_size, read_annotation

# The real data set's image counts (VOC07 trainval + VOC12 trainval = 16,551 train; VOC07 test 4,952).
EXPECTED = {"VOC2007 trainval": 5011, "VOC2012 trainval": 11540, "VOC2007 test": 4952}
CLASS_NAMES = VOC_CLASSES


def plan(root: Path) -> CheckPlan:
    """One item per id of each split file; a missing split file or a repeated id is a problem."""
    items: dict[str, list[tuple]] = {}
    problems: list[str] = []
    for year, image_set in SPLITS["train"] + SPLITS["eval"]:
        split = f"VOC{year} {image_set}"
        base = root / "VOCdevkit" / f"VOC{year}"
        split_file = base / "ImageSets" / "Main" / f"{image_set}.txt"
        missing = f"extract VOC{year}'s {image_set} archive under {root}."
        items[split] = []
        for name in read_split_ids(split_file, missing, problems):
            items[split].append(
                (split, str(base / "JPEGImages" / f"{name}.jpg"), str(base / "Annotations" / f"{name}.xml"))
            )
    return CheckPlan(items=items, expected=EXPECTED, problems=problems)


def check_item(split: str, image_path: str, xml_path: str) -> FileReport:
    """The XML and the JPEG each read on their own (both named when both are bad), then their sizes."""
    report = FileReport(split)
    gt = report.run(read_annotation, xml_path)
    img = report.run(open_jpeg, image_path, True)
    if gt is not None:
        report.classes.update(VOC_CLASSES[label] for label in gt["labels"].tolist())
        if img is not None:
            report.run(check_size, gt, img, image_path, xml_path)
    return report


GROUPS = {"train": ("VOC2007 trainval", "VOC2012 trainval"), "eval": ("VOC2007 test",)}  # printed as sums
