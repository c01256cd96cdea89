"""The SBD on-disk format: where the files are and how to read one mask, torch-free (the loader and
``check.py`` share it, and ``scripts/check_data.py`` starts without importing torch).

``read_mask`` raises ``DataFileError`` with one sentence naming the file for an unreadable ``.mat``, one
without ``GTcls.Segmentation``, or mask values outside 0-20 and 255; ``check_size`` when a mask is not
the size of its image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from data.files import bad_file, open_jpeg
from data.voc.reader import VOC_CLASSES

IGNORE_INDEX = 255  # the "void" label: never a class, ignored by the loss and the metric
SBD_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)
ENV_VAR = "SBD_ROOT"
SPLITS = {"train": "train", "eval": "val"}


VALID_MASK_VALUES = frozenset(range(len(SBD_CLASSES))) | {IGNORE_INDEX}  # 0-20 and the 255 "void"


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """``GTcls.Segmentation`` of the SBD ``.mat`` at ``path`` as uint8 (H, W), values checked to be 0-20 or 255
    (a stray 50 would otherwise surface much later as a loss "target out of bounds"). Errors name the file."""
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError as err:
        raise bad_file(path, "is missing", "copy it from benchmark.tgz") from err
    except Exception as err:  # scipy raises ValueError, TypeError, OSError, ... for a broken .mat
        raise bad_file(path, f"is not a readable MATLAB file ({type(err).__name__}: {err})") from err
    gt = mat.get("GTcls")
    if not isinstance(gt, np.ndarray) or gt.dtype.names is None or gt.size != 1:
        raise bad_file(path, "has no GTcls struct")
    if "Segmentation" not in gt.dtype.names:
        raise bad_file(
            path, f"has a GTcls struct without a Segmentation field (fields: {', '.join(gt.dtype.names)})"
        )
    seg = np.asarray(gt["Segmentation"].flat[0])
    if seg.ndim != 2 or seg.size == 0 or not np.issubdtype(seg.dtype, np.number):
        raise bad_file(
            path, f"has a GTcls.Segmentation of shape {seg.shape} and dtype {seg.dtype}, not a 2-d mask"
        )
    # a histogram is 3x faster than np.unique on a uint8 mask (the checker reads 11k of them)
    values = (
        np.flatnonzero(np.bincount(seg.ravel(), minlength=256)) if seg.dtype == np.uint8 else np.unique(seg)
    )
    bad = [v for v in values.tolist() if v not in VALID_MASK_VALUES]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise bad_file(path, f"has mask values {shown} outside 0-20 and 255")
    return seg.astype(np.uint8)


def read_item(image_path: str | os.PathLike, mask_path: str | os.PathLike, fast: bool = False):
    """The RGB image and its checked mask (a PIL ``L`` image); both must have the same size."""
    img = open_jpeg(image_path, fast=fast)
    seg = read_mask(mask_path)
    check_size(seg, img, image_path, mask_path)
    return img, Image.fromarray(seg)


def check_size(seg: np.ndarray, img, image_path: str | os.PathLike, mask_path: str | os.PathLike) -> None:
    """The mask must cover the image pixel for pixel."""
    w, h = img.info.get("original_size", img.size)
    if seg.shape != (h, w):
        raise bad_file(
            mask_path, f"has a {seg.shape[1]}x{seg.shape[0]} mask but {Path(image_path).name} is {w}x{h}"
        )


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The folder holding img/, cls/ and the split files (``$SBD_ROOT``, else ./datasets/sbd, when unset)."""
    if root in (None, ""):
        root = os.environ.get(ENV_VAR) or "datasets/sbd"
    path = Path(root).expanduser()
    extracted = path / "benchmark_RELEASE" / "dataset"
    if not (path / "train.txt").is_file() and (extracted / "train.txt").is_file():
        return extracted
    return path
