"""The CIFAR-100 on-disk format: where ``cifar-100-python/`` is and whether its files are intact,
torch-free (the loader and ``check.py`` share it, and ``scripts/check_data.py`` starts without torch).

A file is checked against its md5: the real archive's (as torchvision records them; a test keeps the
two in step) or, for a fixture, the ``fixture_md5.json`` its writer recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from data.cifar.fixture import BASE_FOLDER, MANIFEST
from data.files import bad_file

ENV_VAR = "CIFAR100_ROOT"
DEFAULT_ROOT = "datasets/cifar100"
FILES = ("train", "test", "meta")
ARCHIVE_MD5 = {  # torchvision.datasets.CIFAR100's train_list, test_list and meta checksums
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
WAY_OUT = "delete it and rerun with dataset.download=true, or re-extract cifar-100-python.tar.gz"


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The config's root, else $CIFAR100_ROOT, else ./datasets/cifar100 (absolute, for messages)."""
    chosen = root if root not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


def expected_md5(folder: Path) -> dict[str, str]:
    """File name -> md5: the fixture's manifest when there is one, else the real archive's."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        return json.loads(manifest.read_text())
    return dict(ARCHIVE_MD5)


def md5_problem(path: Path, expected: str) -> str | None:
    """One sentence when ``path`` is missing or its md5 is not ``expected``; None when it is intact."""
    if not path.is_file():
        return str(bad_file(path, "is missing", WAY_OUT))
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    if actual != expected:
        return str(bad_file(path, f"has md5 {actual} where {expected} is expected", WAY_OUT))
    return None


def folder_of(root: Path) -> Path:
    """``root/cifar-100-python``, the folder torchvision reads."""
    return Path(root) / BASE_FOLDER
