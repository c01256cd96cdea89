"""What every data set's loader and checker share: the error that names a bad file, the JPEG reader,
and the per-file report that ``scripts/check_data.py`` gathers.

A loader raises ``DataFileError`` at the point of reading, with one sentence that names the file, says
what is wrong with it and how to get a good copy; ``data/<name>/check.py`` runs the same readers over
every file and collects the sentences instead of stopping at the first.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError


class DataFileError(ValueError):
    """A data-set file is unreadable or inconsistent; the message names the file and the reason."""


def bad_file(
    path: str | Path, reason: str, way_out: str = "re-extract it from the original archive"
) -> DataFileError:
    """The error for ``path``: "<path>: <reason>; <way out>."."""
    return DataFileError(f"{path}: {reason}; {way_out}.")


def open_jpeg(path: str | Path, fast: bool = False) -> Image.Image:
    """Decode the image at ``path`` completely (so a truncated JPEG fails here) and return it as RGB.

    ``fast`` lets libjpeg decode at 1/8 scale (every byte is still read, so truncation is still caught,
    but the returned image is small): for checks, which need only the header size kept in ``info``.
    """
    try:
        img = Image.open(path)
        size = img.size
        if fast:
            img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        img.load()
        rgb = img.convert("RGB")
    except FileNotFoundError as err:
        raise bad_file(path, "is missing", "copy it from the original archive") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # truncated, not an image
        raise bad_file(path, f"is not a readable image ({err})") from err
    rgb.info["original_size"] = size
    return rgb


@dataclass
class FileReport:
    """What checking one item (an image and its annotation or mask) found."""

    split: str
    images: int = 1  # images the item holds (CIFAR: a whole split per file)
    classes: Counter = field(default_factory=Counter)  # class name -> objects (VOC) or images (others)
    problems: list[str] = field(default_factory=list)  # one sentence per bad file

    def run(self, check, *args) -> object | None:
        """``check(*args)``, with a ``DataFileError`` recorded as a problem (returns None then)."""
        try:
            return check(*args)
        except DataFileError as err:
            self.problems.append(str(err))
            return None


@dataclass
class CheckPlan:
    """What ``scripts/check_data.py`` runs for one data set: items per split, found without reading them."""

    items: dict[str, list[tuple]]  # split -> arguments of the data set's ``check_item``, one tuple per item
    expected: dict[str, int]  # split -> the real data set's item count
    problems: list[str] = field(default_factory=list)  # layout problems (missing split file, duplicate ids)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A package ``__getattr__`` that imports ``<package>.<module>`` on first use of each public name, so
    importing a torch-free module of the package (``reader``, ``check``) never pulls in torch."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def read_split_ids(split_file: Path, missing: str, problems: list[str]) -> list[str]:
    """The image ids a split file lists, each once and in order; a missing file (``missing`` says how to
    get it) or an id listed twice is appended to ``problems``."""
    if not split_file.is_file():
        problems.append(f"{split_file}: is missing; {missing}")
        return []
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    for name, n in Counter(ids).items():
        if n > 1:
            problems.append(f"{split_file}: lists {name} {n} times; each image once.")
    return list(dict.fromkeys(ids))
