"""Box maths: (cx, cy, w, h) <-> (x1, y1, x2, y2), IoU matrices and paired IoU / CIoU."""

from __future__ import annotations

import math

import torch

EPS = 1e-7


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-size boxes to corner boxes."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes to centre-size boxes."""
    p1, p2 = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([(p1 + p2) / 2, p2 - p1], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (N, M) of corner boxes a (N, 4) and b (M, 4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + EPS)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding corner boxes a (..., 4) and b (..., 4)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + EPS)


def paired_ciou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Complete IoU (Zheng et al., 2020) of corresponding centre-size boxes (..., 4); 1 for identical boxes.

    CIoU = IoU - d^2 / c^2 - alpha * v, with d the centre distance, c the enclosing box's diagonal,
    v = (4 / pi^2) (atan(w_t / h_t) - atan(w_p / h_p))^2 the aspect-ratio term and
    alpha = v / (1 - IoU + v), treated as a constant in the gradient (as in the paper and in YOLO).
    """
    p, t = xywh_to_xyxy(pred), xywh_to_xyxy(target)
    iou = paired_iou(p, t)
    enclose = torch.maximum(p[..., 2:], t[..., 2:]) - torch.minimum(p[..., :2], t[..., :2])
    c2 = enclose.pow(2).sum(-1) + EPS
    d2 = (pred[..., :2] - target[..., :2]).pow(2).sum(-1)
    v = (4 / math.pi**2) * (
        torch.atan(target[..., 2] / (target[..., 3] + EPS)) - torch.atan(pred[..., 2] / (pred[..., 3] + EPS))
    ).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + EPS))
    return iou - (d2 / c2 + alpha * v)
