"""Tiny copies of the paper's data sets in their REAL on-disk formats, for tests and smoke runs.

Each writer lives in its data set's package (``data/<name>/fixture.py``) and produces files that the
real loader (torchvision's class) reads unchanged:

    python -m data.fixtures cifar100 /tmp/cifar      # cifar-100-python/{train,test,meta}
    python -m data.fixtures voc /tmp/voc             # VOCdevkit/VOC2007, VOC2012 (JPEG + XML)
    python -m data.fixtures sbd /tmp/sbd             # img/*.jpg, cls/*.mat, train.txt, val.txt
    python -m data.fixtures voc /tmp/bad --broken    # the same with one defect planted per file (for check_data)
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

WRITERS: dict[str, str] = {
    "cifar100": "data.cifar.fixture:write_cifar100",
    "voc": "data.voc.fixture:write_voc",
    "sbd": "data.sbd.fixture:write_sbd",
}
BREAKERS: dict[str, str] = {
    "cifar100": "data.cifar.fixture:break_cifar100",
    "voc": "data.voc.fixture:break_voc",
    "sbd": "data.sbd.fixture:break_sbd",
}


def _resolve(table: dict[str, str], name: str):
    if name not in table:
        raise ValueError(f"Unknown fixture {name!r}; choose one of {sorted(table)}.")
    module_name, attr = table[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def write_fixture(name: str, root: str | Path, **kwargs) -> Path:
    """Write the tiny data set ``name`` under ``root`` and return the root the loader expects."""
    return _resolve(WRITERS, name)(Path(root), **kwargs)


def write_broken_fixture(name: str, root: str | Path) -> dict[str, str]:
    """Write the tiny data set ``name`` with one defect planted per bad file; return {bad file: reason}."""
    write_fixture(name, root)
    return _resolve(BREAKERS, name)(Path(root))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(WRITERS))
    parser.add_argument("root")
    parser.add_argument("--broken", action="store_true", help="plant one defect per bad file")
    args = parser.parse_args()
    if args.broken:
        for path, reason in write_broken_fixture(args.name, args.root).items():
            print(f"{path}: {reason}")
    else:
        print(write_fixture(args.name, args.root))


if __name__ == "__main__":
    main()
