"""Tasks: how a batch becomes a loss and how a model becomes metrics.

``build_task(name, **cfg) -> Task`` (see ``experiments.train.task.Task`` for the protocol).
"""

from __future__ import annotations

import importlib
from typing import Any

from experiments.train.task import EvalContext, Task

TASKS: dict[str, str] = {
    "classification": "experiments.tasks.classification:ClassificationTask",
    "detection": "experiments.tasks.detection.task:DetectionTask",
    "segmentation": "experiments.tasks.segmentation.task:SegmentationTask",
}


def build_task(name: str, **kwargs: Any) -> Task:
    """Build task ``name``; ``kwargs`` come from the ``task`` config group (num_classes included)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
    module_name, attr = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)(**kwargs)


__all__ = ["EvalContext", "Task", "build_task", "TASKS"]
