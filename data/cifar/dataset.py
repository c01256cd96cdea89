"""CIFAR-100 through ``torchvision.datasets.CIFAR100`` with the authors' train/test transforms.

The root comes from the config (``dataset.root``), else the ``CIFAR100_ROOT`` environment variable,
else ``./datasets/cifar100``; it is the folder that holds ``cifar-100-python/``. The bundle always
offers ``device_loader`` (data/cifar/device.py): it only references the arrays torchvision loaded,
and nothing moves to a device until the trainer picks it (``dataset.device_resident=true``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR100

from data import DatasetBundle, DatasetNotFoundError
from data.cifar.augment import CifarEvalTransform, CifarTrainTransform
from data.cifar.device import DeviceResidentCifar
from data.cifar.fixture import MANIFEST
from data.cifar.reader import ENV_VAR, FILES, expected_md5, md5_problem, resolve_root
from data.files import DataFileError

log = logging.getLogger(__name__)


class FixtureCIFAR100(CIFAR100):
    """torchvision's CIFAR100 checked against a fixture's own md5 manifest (data/cifar/fixture.py).

    A fixture cannot match the md5s of the real archive; its files are still verified, against the
    checksums its writer recorded, so an edited or truncated fixture fails as real data would.
    """

    def __init__(self, root: str | Path, manifest: dict[str, str], **kwargs: Any) -> None:
        self.train_list = [["train", manifest["train"]]]
        self.test_list = [["test", manifest["test"]]]
        self.meta = {**CIFAR100.meta, "md5": manifest["meta"]}
        super().__init__(root, download=False, **kwargs)


def _open(root: Path, train: bool, download: bool) -> CIFAR100:
    folder = root / CIFAR100.base_folder
    transform = CifarTrainTransform() if train else CifarEvalTransform()
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        if train:
            log.warning("CIFAR-100 under %s is a test fixture (checked against %s).", folder, MANIFEST)
        manifest = json.loads(manifest_path.read_text())
        return FixtureCIFAR100(root, manifest, train=train, transform=transform)
    return CIFAR100(root, train=train, transform=transform, download=download)


def build(root: str | Path | None = None, download: bool = False, **kw: Any) -> DatasetBundle:
    """Train (augmented) and test (normalised) splits of CIFAR-100, read by torchvision."""
    if kw:
        raise TypeError(
            f"Unknown cifar100 dataset options {sorted(kw)}; the accepted ones are root and download."
        )
    root = resolve_root(root)
    folder = root / CIFAR100.base_folder
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing and not download:
        raise DatasetNotFoundError(
            f"CIFAR-100 not found: {folder} lacks {', '.join(missing)}. Set dataset.download=true to fetch it, "
            f"or put the extracted cifar-100-python/ folder under {root} "
            f"(set dataset.root or the {ENV_VAR} environment variable to its parent folder)."
        )
    try:
        train = _open(root, train=True, download=download)
        test = _open(root, train=False, download=False)
    except RuntimeError as err:  # torchvision's "not found or corrupted": files are there, md5 is wrong
        md5 = expected_md5(folder)
        named = [p for name in FILES if (p := md5_problem(folder / name, md5[name])) is not None]
        raise DataFileError(
            " ".join(named)
            or f"CIFAR-100 files under {folder} fail their md5 check ({err}); delete {folder} and rerun "
            "with dataset.download=true, or re-extract cifar-100-python.tar.gz there."
        ) from err
    info = {
        "classes": list(train.classes),
        "image_size": (32, 32),
        "mean": 0.5,
        "std": 0.5,
        "root": str(root),
        "fixture": isinstance(train, FixtureCIFAR100),
    }
    bundle = DatasetBundle(train=train, eval=test, num_classes=len(train.classes), info=info)
    bundle.device_loader = DeviceResidentCifar(
        {"train": (train.data, train.targets), "eval": (test.data, test.targets)}
    )
    return bundle
