"""The CIFAR-100 augmentation: HSV maths, the draw statistics, and per-image vs device-batched paths."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from scipy import stats

from data.cifar.augment import (
    CifarEvalTransform,
    CifarTrainTransform,
    hsv_to_rgb,
    rgb_to_hsv,
    to_unit,
)
from data.cifar.device import DeviceResidentCifar

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
