"""From raw YOLO level outputs to scored boxes: ``decode`` then per-class ``nms`` (one NMS call per image)."""

from __future__ import annotations

import torch
from torchvision.ops import nms as torchvision_nms

from experiments.tasks.detection.boxes import xywh_to_xyxy


def decode(preds: list[torch.Tensor], anchors: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """(B, N, 5 + classes): cx, cy, w, h in input pixels, objectness and class probabilities.

    Per level: sigmoid everything; xy = (2 sigma - 0.5 + cell) * stride; wh = (2 sigma)^2 * anchor.
    N runs over levels, then anchors, then rows, then columns.
    """
    out = []
    for pred, level_anchors, stride in zip(preds, anchors, strides):
        b, na, ny, nx, no = pred.shape
        y = pred.float().sigmoid()
        gy, gx = torch.meshgrid(
            torch.arange(ny, device=pred.device), torch.arange(nx, device=pred.device), indexing="ij"
        )
        grid = torch.stack([gx, gy], dim=-1).view(1, 1, ny, nx, 2)
        xy = (y[..., :2] * 2 - 0.5 + grid) * stride
        wh = (y[..., 2:4] * 2).pow(2) * level_anchors.to(pred.device).view(1, na, 1, 1, 2)
        out.append(torch.cat([xy, wh, y[..., 4:]], dim=-1).view(b, -1, no))
    return torch.cat(out, dim=1)


def nms(
    decoded: torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    multi_label: bool = False,
    max_candidates: int = 30000,
) -> list[torch.Tensor]:
    """Per image an (n, 6) tensor x1, y1, x2, y2, score, class (input pixels), best score first.

    Keeps objectness > ``conf_thres``, scores = objectness x class probability (> ``conf_thres``),
    runs NMS per class and keeps the ``max_det`` best. With ``multi_label`` a box is kept once for every
    class scoring above the threshold (YOLOv7's test.py does this for mAP); otherwise only for its best
    class. At most ``max_candidates`` top-scoring boxes enter NMS, as in YOLOv7.

    Per class without a loop over classes, as YOLOv7's ``non_max_suppression`` does: each box is shifted
    by its class times the span of all boxes, so boxes of different classes never overlap, and one NMS runs
    on all of them. (torchvision's ``batched_nms`` loops over the classes instead above 25,000 boxes on
    CUDA, 1,000 on the CPU: some 40 host syncs per image for an untrained model.) The shift is done in
    float64, where adding a multiple of the span to a float32 coordinate is exact, so every IoU, and so
    the result, is the per-class one.
    """
    results = []
    for x in decoded:
        x = x[x[:, 4] > conf_thres]
        boxes = xywh_to_xyxy(x[:, :4])
        scores = x[:, 5:] * x[:, 4:5]
        if multi_label:
            i, cls = (scores > conf_thres).nonzero(as_tuple=True)
            boxes, score = boxes[i], scores[i, cls]
        else:
            score, cls = scores.max(1)
            keep = score > conf_thres
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if score.numel() > max_candidates:
            top = score.topk(max_candidates).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        keep = class_nms(boxes, score, cls, iou_thres)[:max_det]
        results.append(torch.cat([boxes[keep], score[keep, None], cls[keep, None].to(boxes.dtype)], dim=1))
    return results


def class_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thres: float
) -> torch.Tensor:
    """Indices of the boxes NMS keeps within each class, best score first, in one NMS call: (n, 4) xyxy
    boxes offset by ``class x (span + 1)`` in float64 (``span``: the extent of all the boxes' coordinates),
    so that boxes of different classes are disjoint; no host sync beyond NMS's own."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    wide = boxes.double()
    span = wide.max() - wide.min() + 1
    shifted = wide + (classes.to(wide.dtype) * span)[:, None]
    return torchvision_nms(shifted, scores.double(), iou_thres)
