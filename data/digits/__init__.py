"""scikit-learn's bundled handwritten digits (the demo's data set): loader only, nothing on disk to check."""

from data.digits.dataset import build

__all__ = ["build"]
