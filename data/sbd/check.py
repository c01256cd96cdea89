"""Every file of SBD, checked before a sweep (``scripts/check_data.py dataset=sbd``).

Each id of train.txt / val.txt is one item: its JPEG fully decoded (at 1/8 scale) and its ``.mat``
through the loader's own ``read_mask`` (GTcls.Segmentation present, values 0-20 or 255), then the two
sizes compared. The histogram counts images containing each class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.files import CheckPlan, FileReport, open_jpeg, read_split_ids
from data.sbd.reader import SBD_CLASSES, SPLITS, check_size, read_mask

EXPECTED = {"train": 8498, "val": 2857}
CLASS_NAMES = SBD_CLASSES


def plan(root: Path) -> CheckPlan:
    items: dict[str, list[tuple]] = {}
    problems: list[str] = []
    for split in SPLITS.values():
        ids = read_split_ids(
            root / f"{split}.txt", "extract benchmark_RELEASE/dataset of benchmark.tgz there.", problems
        )
        items[split] = []
        for name in ids:
            items[split].append((split, str(root / "img" / f"{name}.jpg"), str(root / "cls" / f"{name}.mat")))
    return CheckPlan(items=items, expected=EXPECTED, problems=problems)


def check_item(split: str, image_path: str, mask_path: str) -> FileReport:
    report = FileReport(split)
    img = report.run(open_jpeg, image_path, True)
    seg = report.run(read_mask, mask_path)
    if seg is not None:
        report.classes.update(SBD_CLASSES[v] for v in np.unique(seg).tolist() if v < len(SBD_CLASSES))
        if img is not None:
            report.run(check_size, seg, img, image_path, mask_path)
    return report
