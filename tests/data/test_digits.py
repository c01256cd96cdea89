"""The digits validation split (issue 15's tuning): carved from the training images, never the test set."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from data.digits.dataset import build


def _images(ds) -> Counter:
    """Each image up to the bundle's affine normalisation (per-image standardised, rounded), with its label:
    bundles normalised with different training statistics still compare."""
    x, y = ds.tensors
    flat = x.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
    return Counter((tuple(torch.round(row * 1000).int().tolist()), int(label)) for row, label in zip(z, y))


def test_val_split_is_carved_from_train_and_the_test_set_is_not_used() -> None:
    plain, tuned = build(), build(val_size=287)
    assert (len(tuned.train), len(tuned.eval)) == (1437 - 287, 287)
    assert (plain.info["eval_split"], tuned.info["eval_split"]) == ("test", "validation")
    # train + validation of the tuning bundle are exactly the plain training images, so no test image
    # is in either, and the two tuning splits do not overlap.
    assert _images(tuned.train) + _images(tuned.eval) == _images(plain.train)
    assert not (set(_images(tuned.eval)) & set(_images(plain.eval)))
    # stratified: every class is in the validation split in proportion (about 28-29 each)
    counts = Counter(tuned.eval.tensors[1].tolist())
    assert sorted(counts) == list(range(10)) and min(counts.values()) >= 26
    # normalised with the statistics of the images it trains on
    assert abs(float(tuned.train.tensors[0].mean())) < 1e-5


def test_bad_val_size_is_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"dataset.val_size=5 does not fit .* choose 0"):
        build(val_size=5)
    with pytest.raises(ValueError, match=r"dataset.val_size=1437"):
        build(val_size=1437)
