"""PASCAL VOC detection: the on-disk format and its readers (reader.py, torch-free), the loader
(dataset.py), letterbox and augmentation (augment.py), the fixture writer (fixture.py) and the file
checks (check.py)."""

from __future__ import annotations

from data.files import lazy_exports

# Public names -> the module holding them, imported on first use: ``import data.voc.check`` (and so
# scripts/check_data.py) must not pull in torch through this package.
_EXPORTS = {
    "build": "dataset",
    "CLASS_INDEX": "reader",
    "ENV_VAR": "reader",
    "VOC_CLASSES": "reader",
    "image_id": "reader",
    "parse_annotation": "reader",
    "read_annotation": "reader",
    "resolve_root": "reader",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
