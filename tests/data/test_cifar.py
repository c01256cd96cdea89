"""CIFAR-100 read through torchvision from a fixture in the real pickle format; the device-resident loader.

The CIFAR-100 augmentation: HSV maths, the draw statistics, and per-image vs device-batched paths."""

from __future__ import annotations

import colorsys
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.datasets import CIFAR100

from data import DatasetNotFoundError, build_datasets
from data.cifar import ENV_VAR, FixtureCIFAR100, build
from data.cifar.augment import (
    CifarEvalTransform,
    CifarTrainTransform,
    hsv_to_rgb,
    rgb_to_hsv,
    to_unit,
)
from data.cifar.device import DeviceResidentCifar
from data.files import DataFileError
from data.fixtures import write_fixture

# ---------------------------------------------------------------- from test_cifar_data.py: CIFAR-100 read through torchvision from a fixture in the real pickle format; the


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


# ---------------------------------------------------------------- from test_cifar_augment.py: The CIFAR-100 augmentation: HSV maths, the draw statistics, and per-image vs dev


N_DRAWS = 4000


def _probe_image() -> np.ndarray:
    """A 2x4 HWC uint8 image: value rising left to right (reveals flips), saturation 0.5 (no clipping
    at x1.5), hue 0.02 on the top row (shifts wrap below 0) and 0.5 on the bottom row."""
    h = torch.tensor([[0.02] * 4, [0.5] * 4])
    s = torch.full((2, 4), 0.5)
    v = torch.tensor([[0.2, 0.3, 0.4, 0.5]] * 2)
    rgb = hsv_to_rgb(h, s, v)
    return (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _decode(outputs: torch.Tensor, x0: torch.Tensor) -> dict[str, torch.Tensor]:
    """Recover each draw's flip, no-op, hue shift and S/V factors from outputs (N, 3, 2, 4)."""
    u = outputs * 0.5 + 0.5  # undo the 0.5/0.5 normalisation
    _, _, v = rgb_to_hsv(u)
    flipped = v[:, 0, 0] > v[:, 0, -1]
    u = torch.where(flipped.view(-1, 1, 1, 1), u.flip(-1), u)
    h1, s1, v1 = rgb_to_hsv(u)
    h0, s0, v0 = rgb_to_hsv(x0)
    shift = ((h1 - h0 + 0.5) % 1.0) - 0.5  # signed shift, undoing the wrap
    return {
        "flipped": flipped,
        "noop": (u - x0).abs().amax(dim=(1, 2, 3)) < 1e-6,
        "hue_out": h1,
        "shift_top": shift[:, 0, 0],
        "shift_bottom": shift[:, 1, 0],
        "sat": s1[:, 1, 2] / s0[1, 2],
        "val": v1[:, 1, 2] / v0[1, 2],
    }


@pytest.fixture(scope="module")
def probe() -> tuple[np.ndarray, torch.Tensor]:
    img = _probe_image()
    return img, to_unit(img)


@pytest.fixture(scope="module")
def per_image_draws(probe) -> torch.Tensor:
    img, _ = probe
    transform = CifarTrainTransform()
    torch.manual_seed(1234)
    return torch.stack([transform(img) for _ in range(N_DRAWS)])


@pytest.fixture(scope="module")
def device_draws(probe) -> torch.Tensor:
    img, _ = probe
    data = DeviceResidentCifar(
        {"train": (np.stack([img] * N_DRAWS), [0] * N_DRAWS), "eval": (img[None], [0])}
    )
    loader = data("train", N_DRAWS, False, False, "cpu", torch.Generator().manual_seed(99))
    (images, _), *rest = list(loader)
    assert not rest
    return images


def test_hsv_conversion_matches_colorsys():
    x = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0] = 0.4  # a gray pixel: hue and saturation 0
    h, s, v = rgb_to_hsv(x)
    for i in range(5):
        for j in range(7):
            ref = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
            assert (h[i, j].item(), s[i, j].item(), v[i, j].item()) == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(hsv_to_rgb(h, s, v), x, atol=1e-6)


def test_per_image_draw_statistics(per_image_draws, probe):
    _, x0 = probe
    d = _decode(per_image_draws, x0)
    tol = 4 * (0.25 / N_DRAWS) ** 0.5  # four standard errors of a fair coin
    assert abs(d["flipped"].float().mean().item() - 0.5) < tol
    assert abs(d["noop"].float().mean().item() - 0.5) < tol
    jit = ~d["noop"]
    # Flips and jitter are drawn independently.
    assert abs((d["flipped"] & jit).float().mean().item() - 0.25) < tol

    shift = d["shift_bottom"][jit]
    assert shift.abs().max().item() <= 0.1 + 1e-5
    assert shift.min().item() < -0.099 and shift.max().item() > 0.099
    assert stats.kstest(shift.numpy(), stats.uniform(loc=-0.1, scale=0.2).cdf).pvalue > 1e-3
    # The top row's hue (0.02) wraps below zero into [0, 1) and moves by the same shift.
    assert torch.allclose(d["shift_top"][jit], shift, atol=1e-4)
    assert (d["hue_out"] >= 0).all() and (d["hue_out"] < 1).all()
    assert (d["hue_out"][jit, 0, 0] > 0.9).float().mean().item() > 0.3  # wrapped draws exist

    for key in ("sat", "val"):
        f = d[key][jit]
        up = f >= 1.0
        assert abs(up.float().mean().item() - 0.5) < 4 * (0.25 / jit.sum().item()) ** 0.5
        assert f.min().item() >= 1 / 1.5 - 1e-4 and f.max().item() <= 1.5 + 1e-4
        # The factor is U(1, 1.5), or its inverse.
        for sample in (f[up], 1.0 / f[~up]):
            assert stats.kstest(sample.numpy(), stats.uniform(loc=1.0, scale=0.5).cdf).pvalue > 1e-3
    # Saturation and value factors are independent draws.
    assert abs(np.corrcoef(d["sat"][jit].numpy(), d["val"][jit].numpy())[0, 1]) < 0.1


def test_device_path_matches_per_image_in_distribution(per_image_draws, device_draws, probe):
    _, x0 = probe
    a, b = _decode(per_image_draws, x0), _decode(device_draws, x0)
    for key in ("flipped", "noop"):
        assert abs(a[key].float().mean().item() - b[key].float().mean().item()) < 0.05
    for key in ("shift_bottom", "sat", "val"):
        sa, sb = a[key][~a["noop"]].numpy(), b[key][~b["noop"]].numpy()
        assert stats.ks_2samp(sa, sb).pvalue > 1e-3, key
    # Whole-image statistics of the outputs, not only the decoded draws.
    for stat in (lambda t: t.mean(dim=(1, 2, 3)), lambda t: t[:, 0, 0, 0], lambda t: t[:, 2, 1, 3]):
        assert stats.ks_2samp(stat(per_image_draws).numpy(), stat(device_draws).numpy()).pvalue > 1e-3


def test_device_path_actually_differs_from_a_wrong_distribution(device_draws, probe):
    """The KS comparison above has power: outputs without jitter are told apart."""
    img, x0 = probe
    plain = torch.stack([CifarEvalTransform()(img)] * N_DRAWS)
    flips = torch.rand(N_DRAWS, generator=torch.Generator().manual_seed(5)) < 0.5
    plain = torch.where(flips.view(-1, 1, 1, 1), plain.flip(-1), plain)
    stat = lambda t: t.mean(dim=(1, 2, 3))  # noqa: E731
    assert stats.ks_2samp(stat(plain).numpy(), stat(device_draws).numpy()).pvalue < 1e-6


def test_eval_transform_is_exact_normalisation(probe):
    img, _ = probe
    out = CifarEvalTransform()(img)
    expected = (torch.from_numpy(img).permute(2, 0, 1).double() / 255 - 0.5) / 0.5
    assert out.dtype == torch.float32 and out.shape == (3, 2, 4)
    assert torch.allclose(out.double(), expected, atol=1e-6)


def test_to_unit_rejects_float_images():
    with pytest.raises(TypeError, match="uint8"):
        to_unit(torch.zeros(3, 4, 4))


def test_device_batch_builds_no_host_tensor(probe, monkeypatch):
    """A device batch must not create a CPU tensor to copy over (issue 11 item 10: on a GPU each such
    ``torch.tensor(..., device=...)`` is one blocking host-to-device copy per batch)."""
    from data.cifar.augment import augment_batch

    _, x0 = probe
    x = x0.expand(8, -1, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(0)

    def no_host_tensor(*args, **kwargs):
        raise AssertionError("torch.tensor called while augmenting a batch")

    monkeypatch.setattr(torch, "tensor", no_host_tensor)
    monkeypatch.setattr(torch, "as_tensor", no_host_tensor)
    out = augment_batch(x, generator)
    assert out.shape == x.shape and torch.isfinite(out).all()
