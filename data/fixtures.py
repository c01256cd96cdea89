"""Tiny copies of the paper's data sets in their REAL on-disk formats, for tests and smoke runs.

Each writer lives beside its loader (``data/fixtures_<name>.py``) and produces files that the
real loader (torchvision's class) reads unchanged:

    python -m data.fixtures cifar100 /tmp/cifar      # cifar-100-python/{train,test,meta}
    python -m data.fixtures voc /tmp/voc             # VOCdevkit/VOC2007, VOC2012 (JPEG + XML)
    python -m data.fixtures sbd /tmp/sbd             # img/*.jpg, cls/*.mat, train.txt, val.txt
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


def write_fixture(name: str, root: str | Path, **kwargs) -> Path:
    """Write the tiny data set ``name`` under ``root`` and return the root the loader expects."""
    if name not in WRITERS:
        raise ValueError(f"Unknown fixture {name!r}; choose one of {sorted(WRITERS)}.")
    module_name, attr = WRITERS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)(Path(root), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(WRITERS))
    parser.add_argument("root")
    args = parser.parse_args()
    print(write_fixture(args.name, args.root))


if __name__ == "__main__":
    main()
