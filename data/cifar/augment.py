"""The authors' CIFAR-100 augmentation: HSV jitter (p = 0.5), horizontal flip (p = 0.5), normalise 0.5/0.5.

Both paths share the draws (``draw_params``) and the colour maths (``jitter_hsv``):
``CifarTrainTransform`` works per image inside a DataLoader worker, ``augment_batch`` on a device
batch (the device-resident loader); tests/data/test_cifar.py checks they agree in distribution.

HSV jitter: hue shifted by U(-0.1, 0.1) and wrapped to [0, 1); saturation and value each multiplied
by a factor f ~ U(1, 1.5), replaced by 1/f with probability 0.5; both clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

P_HSV = 0.5
HUE_SHIFT = 0.1
SAT_MAX = 1.5
VAL_MAX = 1.5
P_FLIP = 0.5
MEAN = 0.5
STD = 0.5


@dataclass
class AugmentParams:
    """Per-image random draws, each a tensor of shape (B,)."""

    apply_hsv: Tensor  # bool
    hue_shift: Tensor  # in [-HUE_SHIFT, HUE_SHIFT]
    sat_factor: Tensor  # in [1/SAT_MAX, SAT_MAX]
    val_factor: Tensor  # in [1/VAL_MAX, VAL_MAX]
    flip: Tensor  # bool

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _factor(u: Tensor, coin: Tensor, high: float) -> Tensor:
    """A factor ~ U(1, high), inverted where ``coin`` < 0.5."""
    f = 1.0 + (high - 1.0) * u
    return torch.where(coin < 0.5, 1.0 / f, f)


def draw_params(n: int, generator: torch.Generator | None = None) -> AugmentParams:
    """Draw the augmentation of ``n`` images (on the generator's device, CPU by default)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(7, n, generator=generator, device=device)
    return AugmentParams(
        apply_hsv=u[0] < P_HSV,
        hue_shift=(2.0 * u[1] - 1.0) * HUE_SHIFT,
        sat_factor=_factor(u[2], u[3], SAT_MAX),
        val_factor=_factor(u[4], u[5], VAL_MAX),
        flip=u[6] < P_FLIP,
    )


def rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """RGB in [0, 1] with channels at dim -3 -> (h, s, v), each in [0, 1]."""
    r, g, b = x.unbind(-3)
    maxc = x.amax(dim=-3)
    minc = x.amin(dim=-3)
    delta = maxc - minc
    gray = delta == 0
    safe_delta = torch.where(gray, torch.ones_like(delta), delta)
    h = torch.where(
        maxc == r,
        ((g - b) / safe_delta) % 6.0,
        torch.where(maxc == g, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0),
    )
    h = torch.where(gray, torch.zeros_like(h), h / 6.0)
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return h, s, maxc


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(h, s, v) in [0, 1] -> RGB with channels at dim -3 (the closed form f(n) = v - v s clamp(min(k, 4-k), 0, 1))."""
    # arange builds (5, 3, 1) on h's device: no host tensor and no blocking copy per batch on a GPU
    n = torch.arange(5.0, 0.0, -2.0, device=h.device, dtype=h.dtype).view(3, 1, 1)
    h, s, v = h.unsqueeze(-3), s.unsqueeze(-3), v.unsqueeze(-3)
    k = (n + h * 6.0) % 6.0
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _per_image(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1)


def jitter_hsv(x: Tensor, hue_shift: Tensor, sat_factor: Tensor, val_factor: Tensor) -> Tensor:
    """HSV jitter of float images ``x`` (B, 3, H, W) in [0, 1] with per-image (B,) draws."""
    h, s, v = rgb_to_hsv(x)
    h = (h + _per_image(hue_shift)) % 1.0
    s = (s * _per_image(sat_factor)).clamp(0.0, 1.0)
    v = (v * _per_image(val_factor)).clamp(0.0, 1.0)
    return hsv_to_rgb(h, s, v)


def apply_params(x: Tensor, p: AugmentParams) -> Tensor:
    """Apply drawn augmentations to float images ``x`` (B, 3, H, W) in [0, 1]; returns [0, 1] images."""
    jittered = jitter_hsv(x, p.hue_shift, p.sat_factor, p.val_factor)
    x = torch.where(p.apply_hsv.view(-1, 1, 1, 1), jittered, x)
    return torch.where(p.flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment_batch(
    x: Tensor, generator: torch.Generator | None = None, params: AugmentParams | None = None
) -> Tensor:
    """Augment float images ``x`` (B, 3, H, W) in [0, 1] on their own device; returns [0, 1] images."""
    if params is None:
        params = draw_params(x.shape[0], generator)
    return apply_params(x, params.to(x.device))


def normalize(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1] (mean 0.5, std 0.5 per channel)."""
    return (x - MEAN) / STD


def to_unit(img: Image.Image | np.ndarray | Tensor) -> Tensor:
    """A PIL image, an HWC uint8 array or a CHW uint8 tensor -> float CHW tensor in [0, 1]."""
    if isinstance(img, Image.Image):
        img = np.array(img.convert("RGB"))
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    if img.dtype != torch.uint8:
        raise TypeError(f"Expected a uint8 image, got dtype {img.dtype}; pass the raw CIFAR pixels.")
    return img.float().div_(255.0)


class CifarTrainTransform:
    """Per-image training transform (torch's global RNG, which DataLoader seeds per worker).

    Branches where ``augment_batch`` masks, so the half of the images left unjittered cost nothing.
    """

    def __call__(self, img: Image.Image | np.ndarray | Tensor) -> Tensor:
        x = to_unit(img).unsqueeze(0)
        p = draw_params(1)
        if p.apply_hsv.item():
            x = jitter_hsv(x, p.hue_shift, p.sat_factor, p.val_factor)
        if p.flip.item():
            x = x.flip(-1)
        return normalize(x[0])


class CifarEvalTransform:
    """Per-image test transform: [0, 1] and normalise."""

    def __call__(self, img: Image.Image | np.ndarray | Tensor) -> Tensor:
        return normalize(to_unit(img))
