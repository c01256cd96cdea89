"""scikit-learn's bundled handwritten digits (the demo's data set): the loader only (dataset.py); nothing
on disk, so no fixture and no check."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "build":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from data.digits.dataset import build

    return build


__all__ = ["build"]
