"""The Semantic Boundaries Dataset: loader (dataset.py), joint image/mask transforms (augment.py), the
fixture writer (fixture.py) and the file checks (check.py)."""

from data.sbd.dataset import ENV_VAR, SBD_CLASSES, build, resolve_root

__all__ = ["ENV_VAR", "SBD_CLASSES", "build", "resolve_root"]
