"""Data sets of the harness: ``build_datasets(name, **cfg) -> DatasetBundle``.

One package per data set (``data/<name>/{dataset,augment,fixture,check}.py``, docs/architecture.md);
every entry is the real loader of a real on-disk format (tests feed it the tiny copies that
``data/fixtures.py`` writes), and a bad file raises ``DataFileError`` naming it. Packages are imported
lazily, as in ``models``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from data.files import DataFileError

if TYPE_CHECKING:  # ``import data`` stays torch-free (scripts/check_data.py starts in a second)
    from torch.utils.data import Dataset

DATASETS: dict[str, str] = {
    "digits": "data.digits.dataset:build",
    "cifar100": "data.cifar.dataset:build",
    "voc": "data.voc.dataset:build",
    "sbd": "data.sbd.dataset:build",
}


@dataclass
class DatasetBundle:
    """What a data set hands the trainer: the two splits and what the task needs to know."""

    train: Dataset
    eval: Dataset
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)  # class names, image size, ...
    # Optional fast path (CIFAR-100): batches built on the device, see docs/architecture.md.
    device_loader: Callable[..., Iterable] | None = None


__all__ = ["DATASETS", "DataFileError", "DatasetBundle", "DatasetNotFoundError", "build_datasets"]


class DatasetNotFoundError(FileNotFoundError):
    """The data set is not where the config says; the message names the path and the way out."""


def build_datasets(name: str, **kwargs: Any) -> DatasetBundle:
    """Build train/eval splits of data set ``name``; ``kwargs`` are its config fields (root, ...)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    module_name, attr = DATASETS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)
