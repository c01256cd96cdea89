"""PASCAL VOC detection: loader (dataset.py), letterbox and augmentation (augment.py), the fixture
writer (fixture.py) and the file checks (check.py)."""

from data.voc.dataset import CLASS_INDEX, ENV_VAR, VOC_CLASSES, build, parse_annotation, resolve_root

__all__ = ["CLASS_INDEX", "ENV_VAR", "VOC_CLASSES", "build", "parse_annotation", "resolve_root"]
