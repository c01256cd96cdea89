"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes): the demo's data.

Shipped inside scikit-learn, so nothing is downloaded. A fixed stratified split keeps 360 images
(20 %) for evaluation; pixels are scaled from 0..16 to [0, 1] and normalised with the training
mean and std. ``val_size > 0`` carves a stratified validation split out of the 1,437 training images
and evaluates on it instead, so hyperparameters can be tuned without ever touching the test set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from data import DatasetBundle

SPLIT_SEED = 0  # fixed: every run evaluates on the same 360 images


def build(test_size: int = 360, split_seed: int = SPLIT_SEED, val_size: int = 0, **_: Any) -> DatasetBundle:
    """Train/eval ``TensorDataset``s of (1x8x8 float image, label); loader-only keys are ignored.

    With ``val_size > 0`` the eval split is ``val_size`` images held out of the training split (the test
    images are then not used at all) and the model trains on the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=split_seed
    )
    if val_size:
        if not 10 <= val_size <= len(x_train) - 10:  # stratify needs a sample per class
            raise ValueError(
                f"dataset.val_size={val_size} does not fit in the {len(x_train)} training images; "
                f"choose 0 (evaluate on the test set) or a size between 10 and {len(x_train) - 10}."
            )
        x_train, x_test, y_train, y_test = train_test_split(
            x_train, y_train, test_size=val_size, stratify=y_train, random_state=split_seed
        )
    mean, std = float(x_train.mean()), float(x_train.std())

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy((x - mean) / std).unsqueeze(1), torch.from_numpy(y))

    return DatasetBundle(
        train=tensors(x_train, y_train),
        eval=tensors(x_test, y_test),
        num_classes=10,
        info={
            "image_size": (8, 8),
            "channels": 1,
            "classes": [str(i) for i in range(10)],
            "eval_split": "validation" if val_size else "test",
        },
    )
