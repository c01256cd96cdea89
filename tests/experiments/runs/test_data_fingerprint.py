"""The data identity's fingerprint (experiments/runs/identity.data_identity): every part of a sample counts —
a tensor's values, dtype and shape, an array's, a container's keys and length — and the fixed seed makes a
random eval transform hash the same every time without moving the caller's RNG streams."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from experiments.runs.identity import DATA_KEYS, data_identity


def _print(samples):
    bundle = SimpleNamespace(train=[0] * 7, eval=samples)
    return data_identity(bundle, "test data")[DATA_KEYS[2]]


BASE = [
    (torch.arange(6, dtype=torch.float32).reshape(2, 3), np.arange(4, dtype=np.int64), {"a": 1, "b": [1, 2]}),
] * 3


@pytest.mark.parametrize(
    "change",
    [
        lambda t, a, d: (t + 1, a, d),  # tensor values
        lambda t, a, d: (t.double(), a, d),  # tensor dtype
        lambda t, a, d: (t.reshape(3, 2), a, d),  # tensor shape, same bytes
        lambda t, a, d: (t, a + 1, d),  # array values
        lambda t, a, d: (t, a.astype(np.int32).astype(np.int64).reshape(2, 2), d),  # array shape
        lambda t, a, d: (t, a.astype(np.float64), d),  # array dtype
        lambda t, a, d: (t, a, {"a": 2, "b": [1, 2]}),  # a mapping's value
        lambda t, a, d: (t, a, {"a": 1, "b": [1, 2, 3]}),  # a list's length
        lambda t, a, d: (t, a, {"a": 1, "b": [[1, 2]]}),  # nesting: same leaves, another structure
    ],
)
def test_any_change_in_a_sample_changes_the_fingerprint(change):
    changed = [change(*sample) for sample in BASE]
    assert _print(changed) != _print(BASE)
    assert _print(BASE) == _print(list(BASE))


def test_random_eval_transforms_hash_the_same_and_leave_the_callers_streams_alone():
    class Noisy:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return (torch.rand(3), np.random.rand(2), random.random())

    bundle = SimpleNamespace(train=[0] * 7, eval=Noisy())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    first = data_identity(bundle, "noisy")
    assert (torch.rand(1), random.random(), np.random.rand()) == expected  # the caller's streams did not move
    assert data_identity(bundle, "noisy") == first == {**first, DATA_KEYS[0]: 7, DATA_KEYS[1]: 5}
    random.seed(0)  # the fixed seed is part of the fingerprint: the same draws give the same hash
    torch.manual_seed(0)
    np.random.seed(0)
    hand = [Noisy()[i] for i in (0, 2, 4)]
    random.seed(1)
    assert _print(hand) == first[DATA_KEYS[2]]


def test_the_fingerprint_is_16_hex_digits_of_sha256():
    value = _print(BASE)
    assert len(value) == 16 and int(value, 16) >= 0
