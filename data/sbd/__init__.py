"""The Semantic Boundaries Dataset: the on-disk format and its readers (reader.py, torch-free), the
loader (dataset.py), joint image/mask transforms (augment.py), the fixture writer (fixture.py) and the
file checks (check.py)."""

from __future__ import annotations

import importlib
from typing import Any

# Public names -> the module holding them, imported on first use: ``import data.sbd.check`` (and so
# scripts/check_data.py) must not pull in torch through this package.
_EXPORTS = {
    "build": "dataset",
    "ENV_VAR": "reader",
    "IGNORE_INDEX": "reader",
    "SBD_CLASSES": "reader",
    "read_mask": "reader",
    "resolve_root": "reader",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
