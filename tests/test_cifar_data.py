"""CIFAR-100 read through torchvision from a fixture in the real pickle format; the device-resident loader."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR100

from data import DatasetNotFoundError, build_datasets
from data.cifar import ENV_VAR, FixtureCIFAR100, build
from data.files import DataFileError
from data.fixtures import write_fixture

N_TRAIN, N_TEST = 130, 70


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_fixture("cifar100", tmp_path_factory.mktemp("cifar"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(scope="module")
def bundle(root):
    return build(root=root, download=False)


def test_fixture_has_the_real_pickle_layout(root):
    folder = root / "cifar-100-python"
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")  # as torchvision reads it
    assert set(train) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    assert train["data"].dtype == np.uint8 and train["data"].shape == (N_TRAIN, 3072)
    assert len(train["fine_labels"]) == N_TRAIN and max(train["fine_labels"]) < 100
    assert all(0 <= c < 20 for c in train["coarse_labels"])
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20
    assert meta["fine_label_names"][:3] == ["apple", "aquarium_fish", "baby"]


def test_real_checksums_reject_the_fixture(root):
    """torchvision's own md5 check stays on for real data; a fixture cannot pass it."""
    with pytest.raises(RuntimeError, match="corrupted"):
        CIFAR100(root, train=True, download=False)


def test_build_reads_the_fixture_through_torchvision(bundle, root):
    assert isinstance(bundle.train, FixtureCIFAR100) and isinstance(bundle.train, CIFAR100)
    assert len(bundle.train) == N_TRAIN and len(bundle.eval) == N_TEST
    assert bundle.num_classes == 100 and bundle.info["classes"][-1] == "worm"
    assert bundle.info["fixture"] is True and bundle.info["root"] == str(root.resolve())
    image, label = bundle.train[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 3
    assert image.min() >= -1 and image.max() <= 1
    # Test images are exactly the stored pixels, normalised; channel-planar order preserved.
    with open(root / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][5].reshape(3, 32, 32)
    image, label = bundle.eval[5]
    assert torch.allclose(image, (torch.from_numpy(raw).float() / 255 - 0.5) / 0.5, atol=1e-6)
    assert label == 5


def test_registry_and_environment_variable(root, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(root))
    bundle = build_datasets("cifar100", root=None, download=False)
    assert len(bundle.eval) == N_TEST and bundle.info["root"] == str(root.resolve())


def test_missing_data_names_the_path_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        build(root=tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert "dataset.download=true" in message and ENV_VAR in message


def test_corrupted_file_fails_its_checksum(root, tmp_path):
    copy = write_fixture("cifar100", tmp_path, n_train=10, n_test=5)
    train = copy / "cifar-100-python" / "train"
    data = bytearray(train.read_bytes())
    data[-20] ^= 0xFF
    train.write_bytes(bytes(data))
    with pytest.raises(DataFileError) as err:
        build(root=copy, download=False)
    message = str(err.value)  # one sentence naming the bad file (and only it), its md5 and the way out
    assert message.startswith(f"{train}: has md5 ") and "dataset.download=true" in message
    assert str(copy / "cifar-100-python" / "test") not in message


def test_unknown_option_is_refused(root):
    with pytest.raises(TypeError, match="crop"):
        build(root=root, random_crop=True)


def test_device_loader_train_epoch(bundle):
    gen = torch.Generator().manual_seed(0)
    loader = bundle.device_loader("train", 32, True, True, "cpu", gen)
    batches = list(loader)
    assert len(loader) == len(batches) == N_TRAIN // 32
    images, labels = batches[0]
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and images.min() >= -1 and images.max() <= 1
    seen = torch.cat([b[1] for b in batches])
    # One epoch draws without replacement: no label occurs more often than in the data set.
    available = Counter(bundle.train.targets)
    assert all(count <= available[label] for label, count in Counter(seen.tolist()).items())
    # Same seed, same epoch; the next epoch is a new permutation.
    again = list(bundle.device_loader("train", 32, True, True, "cpu", torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert not torch.equal(torch.cat([b[1] for b in loader]), seen)


def test_device_loader_eval_matches_the_dataset(bundle):
    loader = bundle.device_loader("eval", 32, False, False, "cpu", None)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and batches[-1][0].shape[0] == N_TEST - 64
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    expected = torch.stack([bundle.eval[i][0] for i in range(N_TEST)])
    assert torch.allclose(images, expected, atol=1e-6)
    assert labels.tolist() == [bundle.eval[i][1] for i in range(N_TEST)]


def test_device_loader_shards_across_ranks(bundle):
    parts = [
        list(bundle.device_loader("eval", 16, False, False, "cpu", None, num_replicas=3, rank=r))
        for r in range(3)
    ]
    counts = [sum(b[1].numel() for b in p) for p in parts]
    assert counts == [24, 23, 23]
    labels = sorted(label for p in parts for b in p for label in b[1].tolist())
    assert labels == sorted(bundle.eval.targets)  # every test image exactly once
    assert [
        len(bundle.device_loader("eval", 16, False, False, "cpu", None, num_replicas=3, rank=r))
        for r in range(3)
    ] == [len(p) for p in parts]


def test_device_loader_rejects_unknown_split(bundle):
    with pytest.raises(ValueError, match="'test'"):
        bundle.device_loader("test", 8, False, False, "cpu", None)
