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

from experiments.tasks.detection.boxes import box_iou, xywh_to_xyxy

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


# ---------------------------------------------------------------------------------------------------
# The same assignment on fixed shapes, for training: one host sync per call instead of ~50.
#
# ``ratio_assign``/``ota_assign`` above are the readable per-level definition (and what tests inspect);
# every boolean mask and ``unique`` there makes a CUDA host wait for the device. Below, the candidates are
# kept as a dense (level, offset, anchor, target) grid with a validity mask, predictions are addressed by
# their flat row in the concatenated levels (``flat_key``), duplicates are found by sorting keys, and the
# only data-dependent step is the final ``nonzero`` that lists the positives. The positives come out in
# the order the per-level functions produce them, so the loss is the same to float rounding.


@dataclass
class Candidates:
    """Every (level, offset, anchor, target) ratio candidate as aligned (M,) tensors, M = nl * 5 * na * nt,
    level-major then offset, anchor, target (the order of ``ratio_assign``'s output)."""

    valid: torch.Tensor  # bool: the anchor fits and the offset's neighbour cell is used
    key: torch.Tensor  # int64 row of the prediction in the concatenated flat levels
    target: torch.Tensor
    level: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    stride: torch.Tensor  # float, the level's stride
    anchor_wh: torch.Tensor  # (M, 2) float, the anchor's size in pixels


@dataclass
class Positives:
    """The assigned predictions as aligned (n,) tensors (``Candidates`` fields at the chosen entries)."""

    key: torch.Tensor
    target: torch.Tensor
    level: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    stride: torch.Tensor
    anchor_wh: torch.Tensor

    def per_level(self, preds_shapes: list[torch.Size]) -> list[LevelMatches]:
        """Split into ``LevelMatches`` (host syncs; for inspection and tests)."""
        out = []
        for lv, shape in enumerate(preds_shapes):
            sel = self.level == lv
            na, ny, nx = shape[1], shape[2], shape[3]
            image = (self.key[sel] - level_offsets(preds_shapes)[lv]) // (na * ny * nx)
            out.append(LevelMatches(image, self.anchor[sel], self.gy[sel], self.gx[sel], self.target[sel]))
        return out


def level_offsets(shapes: list[torch.Size]) -> list[int]:
    """First flat row of each level in ``flatten_levels``'s output."""
    offsets, start = [], 0
    for s in shapes:
        offsets.append(start)
        start += s[0] * s[1] * s[2] * s[3]
    return offsets


def flatten_levels(preds: list[torch.Tensor]) -> torch.Tensor:
    """(sum of B * na * ny * nx, no): every prediction of every level as one row."""
    return torch.cat([p.reshape(-1, p.shape[-1]) for p in preds])


def dense_candidates(
    targets: torch.Tensor,
    anchors: torch.Tensor,
    strides: tuple[int, ...],
    shapes: list[torch.Size],
    offsets: torch.Tensor,
    anchor_t: float = 4.0,
) -> Candidates:
    """``ratio_assign`` as a dense grid with a validity mask (no host sync); ``offsets`` is ``_OFFSETS``
    as a (5, 2) tensor on the targets' device."""
    nt, device = targets.shape[0], targets.device
    image = targets[:, 0].long()
    fields: dict[str, list[torch.Tensor]] = {name: [] for name in Candidates.__dataclass_fields__}
    for level, (stride, shape, start) in enumerate(zip(strides, shapes, level_offsets(shapes))):
        na, ny, nx = shape[1], shape[2], shape[3]
        level_anchors = anchors[level] / stride
        gxy, gwh = targets[:, 2:4] / stride, targets[:, 4:6] / stride
        ratio = gwh[None] / level_anchors[:, None]  # (na, nt, 2)
        fits = torch.maximum(ratio, 1 / ratio).amax(-1) < anchor_t
        inverse = torch.stack([nx - gxy[:, 0], ny - gxy[:, 1]], dim=1)
        low = (gxy % 1 < 0.5) & (gxy > 1)
        high = (inverse % 1 < 0.5) & (inverse > 1)
        use = torch.stack([torch.ones_like(low[:, 0]), low[:, 0], low[:, 1], high[:, 0], high[:, 1]])
        cell = (gxy[None] - offsets[:, None]).floor().long()  # (5, nt, 2)
        gx = cell[..., 0].clamp(0, nx - 1)[:, None].expand(5, na, nt)
        gy = cell[..., 1].clamp(0, ny - 1)[:, None].expand(5, na, nt)
        anchor = torch.arange(na, device=device)[None, :, None].expand(5, na, nt)
        fields["valid"].append((use[:, None, :] & fits[None]).reshape(-1))
        fields["key"].append((start + ((image[None, None] * na + anchor) * ny + gy) * nx + gx).reshape(-1))
        fields["target"].append(torch.arange(nt, device=device).repeat(5 * na))
        fields["level"].append(torch.full((5 * na * nt,), level, dtype=torch.long, device=device))
        fields["anchor"].append(anchor.reshape(-1))
        fields["gy"].append(gy.reshape(-1))
        fields["gx"].append(gx.reshape(-1))
        fields["stride"].append(torch.full((5 * na * nt,), float(stride), device=device))
        fields["anchor_wh"].append(anchors[level][anchor.reshape(-1)])
    return Candidates(**{name: torch.cat(values) for name, values in fields.items()})


def take(c: Candidates, index: torch.Tensor, **replace: torch.Tensor) -> Positives:
    """The candidates at ``index`` (``replace`` overrides fields, e.g. the OTA owner as target)."""
    values = {name: getattr(c, name)[index] for name in Positives.__dataclass_fields__}
    values.update(replace)
    return Positives(**values)


def dense_ratio_assign(c: Candidates) -> Positives:
    """Every valid candidate, duplicates included (``ratio_assign``'s positives): one host sync."""
    return take(c, c.valid.nonzero().squeeze(1))


@torch.no_grad()
def dense_ota_assign(
    flat: torch.Tensor,
    targets: torch.Tensor,
    c: Candidates,
    num_classes: int,
    topk: int = 10,
    iou_weight: float = 3.0,
) -> Positives:
    """``ota_assign`` on the dense candidates (see its docstring for the rule): one host sync.

    The pool is the valid candidates with distinct keys, in key order (= ``torch.unique``'s order of
    (level, image, anchor, gy, gx)): keys are sorted with invalid ones pushed to the end, and a candidate
    joins the pool when its key differs from the previous one.
    """
    if targets.shape[0] == 0:  # a shape, known on the host
        return take(c, c.key.new_zeros(0))
    sentinel = flat.shape[0]
    keys, order = torch.where(c.valid, c.key, sentinel).sort(stable=True)
    first = torch.ones_like(c.valid)
    first[1:] = keys[1:] != keys[:-1]
    pool = c.valid[order] & first  # (M,) in sorted order

    raw = flat[keys.clamp(max=sentinel - 1)].float()
    gy, gx = c.gy[order], c.gx[order]
    boxes = decode_at(raw, gy, gx, c.anchor_wh[order], c.stride[order][:, None])
    image = (targets[:, 0].long()[c.target])[order]  # each candidate's image, via its target

    same_image = (targets[:, 0].long()[:, None] == image[None, :]) & pool[None, :]  # (nt, M)
    iou = box_iou(xywh_to_xyxy(targets[:, 2:6]), xywh_to_xyxy(boxes)) * same_image
    k = min(topk, iou.shape[1])
    dynamic_k = iou.topk(k, dim=1).values.sum(1).int().clamp(min=1)

    log_p = 0.5 * (F.logsigmoid(raw[:, 5:]) + F.logsigmoid(raw[:, 4:5]))
    p = log_p.exp().clamp(1e-7, 1 - 1e-7)
    neg = -torch.log1p(-p)
    cls_t = targets[:, 1].long()
    cls_cost = neg.sum(1)[None, :] - neg.T[cls_t] - p.log().T[cls_t]
    cost = cls_cost + iou_weight * -torch.log(iou + 1e-8)
    cost = cost.masked_fill(~same_image, float("inf"))

    chosen = cost.topk(k, dim=1, largest=False).indices
    keep = torch.arange(k, device=flat.device)[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(same_image).scatter_(1, chosen, keep) & same_image
    claims = matching.sum(0)
    owner = torch.where(claims > 1, cost.argmin(0), matching.int().argmax(0))
    chosen_rows = (claims > 0).nonzero().squeeze(1)
    return take(c, order[chosen_rows], target=owner[chosen_rows])
