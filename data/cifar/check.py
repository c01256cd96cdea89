"""The three CIFAR-100 files, checked before a sweep (``scripts/check_data.py dataset=cifar100``).

Each file is checked against its md5 (torchvision's checksums of the real archive, or a fixture's own
``fixture_md5.json``) and unpickled: ``data`` uint8 (N, 3072), one fine label in 0-99 per row, meta with
the 100 class names. The histogram counts images per fine class.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from data.cifar.fixture import FINE_LABEL_NAMES
from data.cifar.reader import WAY_OUT, expected_md5, folder_of, md5_problem
from data.files import CheckPlan, FileReport, bad_file

EXPECTED = {"train": 50000, "test": 10000}
CLASS_NAMES = tuple(FINE_LABEL_NAMES)  # the real archive's names, in its order


def plan(root: Path) -> CheckPlan:
    folder = folder_of(root)
    md5 = expected_md5(folder)
    items = {split: [(split, str(folder / split), md5[split])] for split in ("train", "test")}
    items["meta"] = [("meta", str(folder / "meta"), md5["meta"])]
    return CheckPlan(items=items, expected=EXPECTED)


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated or not a pickle: EOFError, UnpicklingError, ...
        raise bad_file(path, f"is not a readable pickle ({type(err).__name__}: {err})", WAY_OUT) from err


def _contents(split: str, path: str, report: FileReport) -> None:
    obj = _unpickle(path)
    if split == "meta":
        names = obj.get("fine_label_names") if isinstance(obj, dict) else None
        if not isinstance(names, list) or len(names) != 100:
            raise bad_file(path, "has no list of 100 fine_label_names", WAY_OUT)
        report.images = 0
        return
    data = obj.get("data") if isinstance(obj, dict) else None
    labels = obj.get("fine_labels") if isinstance(obj, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise bad_file(path, f"has 'data' of shape {shape}, not uint8 (N, 3072)", WAY_OUT)
    if not isinstance(labels, list) or len(labels) != len(data):
        raise bad_file(path, f"has {len(labels or [])} fine_labels for {len(data)} images", WAY_OUT)
    bad = sorted({v for v in labels if not (isinstance(v, int) and 0 <= v < 100)})
    if bad:
        raise bad_file(path, f"has fine labels {bad[:5]} outside 0-99", WAY_OUT)
    report.images = len(data)
    report.classes.update(CLASS_NAMES[v] for v in labels)


def check_item(split: str, path: str, md5: str) -> FileReport:
    report = FileReport(split, images=0)
    problem = md5_problem(Path(path), md5)
    if problem is not None:
        report.problems.append(problem)
        if not Path(path).is_file():
            return report
    report.run(_contents, split, path, report)
    return report
