"""The Semantic Boundaries Dataset: the on-disk format and its readers (reader.py, torch-free), the
loader (dataset.py), joint image/mask transforms (augment.py), the fixture writer (fixture.py) and the
file checks (check.py)."""

from __future__ import annotations

from data.files import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
