"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes): the demo's data.

Shipped inside scikit-learn, so nothing is downloaded. A fixed stratified split keeps 360 images
(20 %) for evaluation; pixels are scaled from 0..16 to [0, 1] and normalised with the training
mean and std.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from data import DatasetBundle

SPLIT_SEED = 0  # fixed: every run evaluates on the same 360 images


def build(test_size: int = 360, split_seed: int = SPLIT_SEED, **_: Any) -> DatasetBundle:
    """Train/eval ``TensorDataset``s of (1x8x8 float image, label); loader-only keys are ignored."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=split_seed
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy((x - mean) / std).unsqueeze(1), torch.from_numpy(y))

    return DatasetBundle(
        train=tensors(x_train, y_train),
        eval=tensors(x_test, y_test),
        num_classes=10,
        info={"image_size": (8, 8), "channels": 1, "classes": [str(i) for i in range(10)]},
    )
