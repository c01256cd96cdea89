"""Joint image/mask transforms for SBD segmentation (``SBDataset``'s ``transforms`` callables).

Training: random scale in [0.5, 2.0] (bilinear image, nearest mask), horizontal flip with probability
0.5, random crop to ``size`` x ``size``, padding the image with 0 and the mask with the ignore index 255
where the scaled image is smaller. Evaluation: the image resized to ``size`` x ``size`` (the model
predicts there), the mask kept at the original size (the metric is scored there).
Items are ``(image uint8 (3, S, S), mask uint8 (S, S) or (H, W))``. Randomness comes from ``torch``'s
generator, which the DataLoader seeds per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from data.sbd.reader import IGNORE_INDEX


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator).item())


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor on a C-contiguous, writable copy where ``arr`` is a view (of PIL's read-only buffer)."""
    return torch.from_numpy(np.require(arr, dtype=np.uint8, requirements=["C", "W"]))


def _image_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) -> (3, H, W), one copy."""
    return _tensor(arr.transpose(2, 0, 1))


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, flip and crop (pad image 0 / mask ``ignore_index``) to ``size`` x ``size``."""

    size: int = 320
    scale: tuple[float, float] = (0.5, 2.0)
    flip: float = 0.5
    ignore_index: int = IGNORE_INDEX
    generator: torch.Generator | None = None

    def __call__(self, img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        s = _uniform(self.scale[0], self.scale[1], self.generator)
        w, h = max(1, round(img.width * s)), max(1, round(img.height * s))
        img = img.convert("RGB").resize((w, h), Image.BILINEAR)
        mask = mask.resize((w, h), Image.NEAREST)
        image, target = np.asarray(img, dtype=np.uint8), np.asarray(mask, dtype=np.uint8)
        ph, pw = max(h, self.size), max(w, self.size)
        if (ph, pw) != (h, w):
            canvas = np.zeros((ph, pw, 3), dtype=np.uint8)
            canvas[:h, :w] = image
            labels = np.full((ph, pw), self.ignore_index, dtype=np.uint8)
            labels[:h, :w] = target
            image, target = canvas, labels
        top, left = _randint(ph - self.size, self.generator), _randint(pw - self.size, self.generator)
        image = image[top : top + self.size, left : left + self.size]
        target = target[top : top + self.size, left : left + self.size]
        if torch.rand((), generator=self.generator).item() < self.flip:
            image, target = image[:, ::-1], target[:, ::-1]
        return _image_tensor(image), _tensor(target)


@dataclass(frozen=True)
class EvalTransform:
    """The image resized (bilinear) to ``size`` x ``size``; the mask untouched at the original size."""

    size: int = 320

    def __call__(self, img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(img.convert("RGB").resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)
        return _image_tensor(image), _tensor(np.asarray(mask, dtype=np.uint8))


@dataclass(frozen=True)
class ResizeTransform:
    """Image (bilinear) and mask (nearest) both resized to ``size`` x ``size``: training without augmentation."""

    size: int = 320

    def __call__(self, img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.size, self.size)
        image = np.asarray(img.convert("RGB").resize(shape, Image.BILINEAR), dtype=np.uint8)
        return _image_tensor(image), _tensor(np.asarray(mask.resize(shape, Image.NEAREST), dtype=np.uint8))
