"""Which prediction (level, image, anchor, cell) learns which target box.

``ratio_assign`` is YOLOv5/v7's matching: an anchor takes a target when their width and height
ratios are both within ``anchor_t``; the target's own cell and the two neighbouring cells nearest
its centre (offset 0.5) predict it. ``ota_assign`` is YOLOv7's simplified OTA on top of those
candidates: each target takes its ``k`` cheapest candidates, k from its IoUs, and a prediction
claimed by several targets goes to the cheapest one.

Targets are float (N, 6) rows ``[image_index, class, cx, cy, w, h]`` in input pixels; anchors are
(levels, anchors, 2) in input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.detection.boxes import box_iou, xywh_to_xyxy

# Centre cell, then the neighbour to the left, above, right, below: subtracting half a cell
# from the centre (in grid units) and flooring lands on that neighbour.
_OFFSETS = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5))


@dataclass
class LevelMatches:
    """Positive predictions of one level: five aligned (n,) int64 tensors."""

    image: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    target: torch.Tensor  # row of the targets tensor each positive learns

    def __len__(self) -> int:
        return self.image.numel()


def ratio_assign(
    targets: torch.Tensor,
    anchors: torch.Tensor,
    strides: tuple[int, ...],
    grid_sizes: list[tuple[int, int]],
    anchor_t: float = 4.0,
) -> list[LevelMatches]:
    """YOLOv5/v7 ratio matching: per level, every (anchor, target) with max(w/w_a, w_a/w, h/h_a, h_a/h) < anchor_t,
    at the target's cell and its two nearest neighbours (``grid_sizes`` holds each level's (ny, nx))."""
    device = targets.device
    offsets = torch.tensor(_OFFSETS, device=device)
    out = []
    for level, (stride, (ny, nx)) in enumerate(zip(strides, grid_sizes)):
        level_anchors = anchors[level].to(device) / stride  # (na, 2), grid units
        gxy, gwh = targets[:, 2:4] / stride, targets[:, 4:6] / stride
        ratio = gwh[None] / level_anchors[:, None]  # (na, nt, 2)
        fits = torch.maximum(ratio, 1 / ratio).amax(-1) < anchor_t
        anchor_idx, target_idx = fits.nonzero(as_tuple=True)
        gxy = gxy[target_idx]
        inverse = torch.tensor([nx, ny], device=device, dtype=gxy.dtype) - gxy
        low = (gxy % 1 < 0.5) & (gxy > 1)  # left / upper neighbour exists and is the nearer one
        high = (inverse % 1 < 0.5) & (inverse > 1)  # right / lower neighbour
        use = torch.stack(
            [torch.ones_like(low[:, 0]), low[:, 0], low[:, 1], high[:, 0], high[:, 1]]
        )  # (5, m)
        which, match = use.nonzero(as_tuple=True)
        cell = (gxy[match] - offsets[which]).floor().long()
        out.append(
            LevelMatches(
                image=targets[target_idx[match], 0].long(),
                anchor=anchor_idx[match],
                gy=cell[:, 1].clamp(0, ny - 1),
                gx=cell[:, 0].clamp(0, nx - 1),
                target=target_idx[match],
            )
        )
    return out


def decode_at(
    pred: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor, anchor_wh: torch.Tensor, stride: float
) -> torch.Tensor:
    """Boxes (n, 4) cx, cy, w, h in pixels from raw outputs ``pred`` (n, >=4) at cells (gy, gx)."""
    s = pred[:, :4].sigmoid()
    xy = (s[:, :2] * 2 - 0.5 + torch.stack([gx, gy], dim=1)) * stride
    wh = (s[:, 2:4] * 2).pow(2) * anchor_wh
    return torch.cat([xy, wh], dim=1)


@torch.no_grad()
def ota_assign(
    preds: list[torch.Tensor],
    targets: torch.Tensor,
    anchors: torch.Tensor,
    strides: tuple[int, ...],
    candidates: list[LevelMatches],
    num_classes: int,
    topk: int = 10,
    iou_weight: float = 3.0,
) -> list[LevelMatches]:
    """YOLOv7's OTA assignment, vectorised over the batch.

    Candidates are the ratio matches of every target in the same image (each prediction counted
    once). For target t and candidate c: IoU of t with c's decoded box; cost = BCE of c's
    sqrt(class prob x objectness) against t's one-hot class, summed over classes, plus
    ``iou_weight`` x -log(IoU + 1e-8). Each target keeps its k cheapest candidates, k = int(sum of
    its ``topk`` largest IoUs) clamped to >= 1; a candidate kept by several targets goes to the
    target with the lowest cost for it. Differences from YOLOv7's loop: YOLOv7 keeps a prediction
    once per target whose ratio step found it, so duplicates can fill a target's k twice and train
    one prediction towards two targets; here a prediction is one candidate with one target.
    """
    device = targets.device
    nl = len(preds)
    # The pool: unique (level, image, anchor, gy, gx) across the ratio matches.
    pool = torch.cat(
        [
            torch.stack([torch.full_like(m.image, level), m.image, m.anchor, m.gy, m.gx], dim=1)
            for level, m in enumerate(candidates)
        ]
    )
    empty = [LevelMatches(*(torch.zeros(0, dtype=torch.long, device=device),) * 5) for _ in range(nl)]
    if pool.shape[0] == 0:
        return empty
    pool = torch.unique(pool, dim=0)
    level, image, anchor, gy, gx = pool.unbind(1)

    boxes = torch.empty(pool.shape[0], 4, device=device)
    logits = torch.empty(pool.shape[0], 1 + num_classes, device=device)  # objectness, classes
    for lv in range(nl):
        sel = level == lv
        raw = preds[lv][image[sel], anchor[sel], gy[sel], gx[sel]].float()
        boxes[sel] = decode_at(raw, gy[sel], gx[sel], anchors[lv].to(device)[anchor[sel]], strides[lv])
        logits[sel] = raw[:, 4:]

    same_image = targets[:, 0].long()[:, None] == image[None, :]  # (nt, m)
    iou = box_iou(xywh_to_xyxy(targets[:, 2:6]), xywh_to_xyxy(boxes)) * same_image
    k = min(topk, iou.shape[1])
    dynamic_k = iou.topk(k, dim=1).values.sum(1).int().clamp(min=1)  # (nt,)

    # Class cost: BCE of p = sqrt(sigmoid(cls) * sigmoid(obj)) against the one-hot target class,
    # summed over classes = sum_c -log(1 - p_c) + [-log p_t + log(1 - p_t)] for target class t.
    log_p = 0.5 * (F.logsigmoid(logits[:, 1:]) + F.logsigmoid(logits[:, :1]))  # (m, nc)
    p = log_p.exp().clamp(1e-7, 1 - 1e-7)
    neg = -torch.log1p(-p)  # (m, nc)
    cls_t = targets[:, 1].long()
    cls_cost = neg.sum(1)[None, :] - neg.T[cls_t] - p.log().T[cls_t]  # (nt, m)
    cost = cls_cost + iou_weight * -torch.log(iou + 1e-8)
    cost = cost.masked_fill(~same_image, float("inf"))

    # Each target keeps its dynamic_k cheapest candidates (never one from another image).
    chosen = cost.topk(k, dim=1, largest=False).indices  # (nt, k)
    keep = torch.arange(k, device=device)[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(same_image).scatter_(1, chosen, keep) & same_image

    claims = matching.sum(0)
    owner = torch.where(claims > 1, cost.argmin(0), matching.int().argmax(0))
    pos = claims > 0
    out = []
    for lv in range(nl):
        sel = pos & (level == lv)
        out.append(LevelMatches(image[sel], anchor[sel], gy[sel], gx[sel], owner[sel]))
    return out
