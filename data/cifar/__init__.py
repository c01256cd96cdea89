"""CIFAR-100: loader (dataset.py), the authors' augmentation (augment.py), the device-resident loader
(device.py), the fixture writer (fixture.py) and the file checks (check.py)."""

from data.cifar.dataset import ENV_VAR, FixtureCIFAR100, build, resolve_root

__all__ = ["ENV_VAR", "FixtureCIFAR100", "build", "resolve_root"]
