"""Letterbox and the paper's detection augmentations: random padding/scaling, HSV jitter, horizontal flip.

Everything is one affine map ``out = scale * orig + pad`` (x mirrored as ``size - x`` when flipped), so
boxes follow the pixels exactly. The values mirror YOLOv7's ``hyp.scratch.tiny.yaml`` (scale 0.5,
translate 0.1, hsv 0.015/0.7/0.4, fliplr 0.5), and boxes are filtered as its ``box_candidates``
(wh_thr 2, area_thr 0.1, ar_thr 20); mosaic and mixup are not used (the paper lists neither).
Randomness comes from ``torch``'s generator, which the DataLoader seeds per worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

PAD_VALUE = 114  # YOLO's grey


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation strengths (YOLOv7-tiny's scratch hyperparameters)."""

    scale: float = 0.5  # random zoom factor in [1 - scale, 1 + scale] around the image centre
    translate: float = 0.1  # random shift in [-translate, translate] x image size, per axis
    hsv_h: float = 0.015  # hue shift in [-hsv_h, hsv_h] of the full hue circle
    hsv_s: float = 0.7  # saturation gain in [1 - hsv_s, 1 + hsv_s]
    hsv_v: float = 0.4  # value (brightness) gain in [1 - hsv_v, 1 + hsv_v]
    fliplr: float = 0.5  # probability of a horizontal flip
    # YOLOv7's box_candidates after the transform (wh_thr, area_thr, ar_thr; all strict): a box survives
    # when wider and higher than min_size pixels, kept more than min_area_ratio of its area, and its
    # aspect ratio max(w/h, h/w) is below max_aspect (a sliver clipped at the canvas edge is dropped).
    min_size: float = 2.0
    min_area_ratio: float = 0.1
    max_aspect: float = 20.0


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def hsv_jitter(img: Image.Image, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Image.Image:
    """Shift hue and scale saturation and value by random amounts, through 256-entry lookup tables."""
    dh = _uniform(-cfg.hsv_h, cfg.hsv_h, generator)
    gs = _uniform(1 - cfg.hsv_s, 1 + cfg.hsv_s, generator)
    gv = _uniform(1 - cfg.hsv_v, 1 + cfg.hsv_v, generator)
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + dh * 256.0, 256.0).astype(np.uint8)
    lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gv, 0, 255).astype(np.uint8)
    h, s, v = img.convert("HSV").split()
    return Image.merge(
        "HSV", (h.point(lut_h.tolist()), s.point(lut_s.tolist()), v.point(lut_v.tolist()))
    ).convert("RGB")


def transform_boxes(
    boxes: np.ndarray, scale: float, pad: tuple[float, float], flip: bool, size: int
) -> np.ndarray:
    """Map xyxy boxes of the original image through ``scale * xy + pad`` (then the mirror ``size - x``)."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = out[:, [0, 2]] * scale + pad[0]
    out[:, [1, 3]] = out[:, [1, 3]] * scale + pad[1]
    if flip:
        out[:, [0, 2]] = size - out[:, [2, 0]]
    return out


def keep_boxes(moved: np.ndarray, size: int, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Clip moved boxes to the canvas; return them and the mask of those YOLOv7's ``box_candidates`` keeps:
    more than ``min_size`` wide and high, more than ``min_area_ratio`` of their (moved, unclipped) area
    left, and an aspect ratio below ``max_aspect``."""
    clipped = moved.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, size)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, size)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area_before = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    eps = 1e-16
    aspect = np.maximum(w / (h + eps), h / (w + eps))
    keep = (w > cfg.min_size) & (h > cfg.min_size) & (w * h / (area_before + eps) > cfg.min_area_ratio)
    return clipped, keep & (aspect < cfg.max_aspect)


def letterbox(
    img: Image.Image,
    boxes: np.ndarray,
    size: int,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Image.Image, np.ndarray, np.ndarray, dict]:
    """Fit ``img`` into a ``size`` x ``size`` grey canvas keeping its aspect; with ``augment``, also zoom,
    shift, colour-jitter and flip it at random.

    Returns the canvas, the moved and clipped boxes, the mask of the boxes kept, and the geometry
    ``{"scale", "pad", "flip"}`` with ``out_x = scale * x + pad_x`` (before the mirror when ``flip``).
    """
    w0, h0 = img.size
    fit = size / max(w0, h0)
    nw, nh = max(1, math.floor(w0 * fit + 1e-6)), max(1, math.floor(h0 * fit + 1e-6))
    # the source box (up to a pixel short of the image) makes the scale exactly ``fit`` on both axes
    source = (0, 0, min(nw / fit, w0), min(nh / fit, h0))
    resized = img.resize((nw, nh), Image.BILINEAR, box=source) if fit != 1 else img
    if augment is None:
        left, top = (size - nw) // 2, (size - nh) // 2
        canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
        canvas.paste(resized, (left, top))
        geometry = {"scale": fit, "pad": (float(left), float(top)), "flip": False}
    else:
        resized = hsv_jitter(resized, augment, generator)
        zoom = _uniform(1 - augment.scale, 1 + augment.scale, generator)
        tx = _uniform(-augment.translate, augment.translate, generator) * size
        ty = _uniform(-augment.translate, augment.translate, generator) * size
        flip = torch.rand((), generator=generator).item() < augment.fliplr
        # resized pixel p sits at (p - (nw, nh) / 2) * zoom + size / 2 + (tx, ty) on the canvas
        pad_x = size / 2 + tx - zoom * nw / 2
        pad_y = size / 2 + ty - zoom * nh / 2
        sx = -zoom if flip else zoom
        ox = size - pad_x if flip else pad_x
        # PIL wants the inverse map: canvas (x, y) -> resized (a x + b y + c, d x + e y + f)
        inverse = (1 / sx, 0.0, -ox / sx, 0.0, 1 / zoom, -pad_y / zoom)
        canvas = resized.transform(
            (size, size), Image.AFFINE, inverse, resample=Image.BILINEAR, fillcolor=(PAD_VALUE,) * 3
        )
        geometry = {"scale": fit * zoom, "pad": (pad_x, pad_y), "flip": flip}
    moved = transform_boxes(boxes, geometry["scale"], geometry["pad"], geometry["flip"], size)
    if augment is None:
        # evaluation keeps every box that still has an area (the ground truth is scored from ``meta``)
        clipped, keep = keep_boxes(
            moved, size, AugmentConfig(min_size=0.0, min_area_ratio=0.0, max_aspect=np.inf)
        )
    else:
        clipped, keep = keep_boxes(moved, size, augment)
    return canvas, clipped, keep, geometry
