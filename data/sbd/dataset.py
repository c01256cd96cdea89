"""The Semantic Boundaries Dataset (Hariharan et al. 2011) for segmentation: 8,498 train / 2,857 val images,
21 classes (0 background, 1-20 the VOC classes), read through ``torchvision.datasets.SBDataset`` in
``mode="segmentation"``.

``root`` is the folder holding ``img/``, ``cls/``, ``train.txt`` and ``val.txt`` (what torchvision's
download leaves there); the extracted archive's ``benchmark_RELEASE/dataset`` inside it is accepted too.
Items are ``(image uint8 (3, S, S), mask uint8)``: random scale/flip/crop for training, resized images with
original-size masks for evaluation (``data/sbd/augment.py``). Every item is read through ``read_item``: an
unreadable JPEG or ``.mat``, a ``.mat`` without ``GTcls.Segmentation``, mask values outside 0-20 and 255,
or a mask of another size than its image raise ``DataFileError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchvision.datasets import SBDataset

from data import DatasetBundle, DatasetNotFoundError
from data.sbd.augment import EvalTransform, ResizeTransform, TrainTransform
from data.sbd.reader import ENV_VAR, IGNORE_INDEX, SBD_CLASSES, SPLITS, read_item, resolve_root


class CheckedSBDataset(SBDataset):
    """torchvision's ``SBDataset`` (segmentation mode) whose items pass ``read_item``: a broken file fails
    with one sentence naming it, when it is read."""

    def __getitem__(self, index: int):
        img, mask = read_item(self.images[index], self.masks[index])
        return self.transforms(img, mask) if self.transforms is not None else (img, mask)


def _check(path: Path) -> None:
    for name in ("img", "cls"):
        if not (path / name).is_dir():
            _missing(path, path / name)
    for image_set in SPLITS.values():
        if not (path / f"{image_set}.txt").is_file():
            _missing(path, path / f"{image_set}.txt")


def _missing(path: Path, what: Path) -> None:
    raise DatasetNotFoundError(
        f"Semantic Boundaries Dataset not found: {what.resolve()} is missing. Put img/, cls/, train.txt and "
        f"val.txt (benchmark_RELEASE/dataset of benchmark.tgz) under {path.resolve()}, or point dataset.root "
        f"(or ${ENV_VAR}) at that folder, or set dataset.download=true to fetch benchmark.tgz (~1.4 GB)."
    )


def build(
    root: str | os.PathLike | None = None,
    download: bool = False,
    img_size: int = 320,
    augment: bool = True,
    scale: tuple[float, float] | list[float] = (0.5, 2.0),
    flip: float = 0.5,
    **kwargs: Any,
) -> DatasetBundle:
    """SBD ``train`` for training (augmented crops of ``img_size``; with ``augment=False`` the whole image
    and mask resized to ``img_size``), ``val`` for evaluation."""
    if kwargs:
        raise ValueError(
            f"Unknown SBD options {sorted(kwargs)}; known: root, download, img_size, augment, scale, flip."
        )
    if img_size < 16:
        raise ValueError(
            f"img_size={img_size} is too small; U-Net halves it four times (use >= 16, e.g. 320)."
        )
    low, high = (float(v) for v in scale)
    if not 0 < low <= high:
        raise ValueError(f"scale={list(scale)} must be [low, high] with 0 < low <= high, e.g. [0.5, 2.0].")
    if not 0.0 <= flip <= 1.0:
        raise ValueError(f"flip={flip} is a probability; choose a value in [0, 1].")
    path = resolve_root(root)
    if download and not (path / "train.txt").is_file():
        path.mkdir(parents=True, exist_ok=True)
        SBDataset(str(path), image_set="train", mode="segmentation", download=True)
    _check(path)
    train_tf = TrainTransform(img_size, (low, high), flip) if augment else ResizeTransform(img_size)
    train = CheckedSBDataset(str(path), image_set=SPLITS["train"], mode="segmentation", transforms=train_tf)
    val = CheckedSBDataset(
        str(path), image_set=SPLITS["eval"], mode="segmentation", transforms=EvalTransform(img_size)
    )
    info = {
        "class_names": list(SBD_CLASSES),
        "img_size": img_size,
        "ignore_index": IGNORE_INDEX,
        "root": str(path),
    }
    return DatasetBundle(train=train, eval=val, num_classes=len(SBD_CLASSES), info=info)
