"""From raw YOLO level outputs to scored boxes: ``decode`` then per-class ``nms``."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

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
    runs NMS per class (``torchvision.ops.batched_nms``) and keeps the ``max_det`` best. With
    ``multi_label`` a box is kept once for every class scoring above the threshold (YOLOv7's
    test.py does this for mAP); otherwise only for its best class. At most ``max_candidates``
    top-scoring boxes enter NMS, as in YOLOv7.
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
        keep = batched_nms(boxes, score, cls, iou_thres)[:max_det]
        results.append(torch.cat([boxes[keep], score[keep, None], cls[keep, None].to(boxes.dtype)], dim=1))
    return results
