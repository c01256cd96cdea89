"""CIFAR-100: the on-disk checks (reader.py, torch-free), the loader (dataset.py), the authors'
augmentation (augment.py), the device-resident loader (device.py), the fixture writer (fixture.py) and
the file checks (check.py)."""

from __future__ import annotations

from data.files import lazy_exports

# Public names -> the module holding them, imported on first use: ``import data.cifar.check`` (and so
# scripts/check_data.py) must not pull in torch through this package.
_EXPORTS = {
    "build": "dataset",
    "FixtureCIFAR100": "dataset",
    "ENV_VAR": "reader",
    "resolve_root": "reader",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
