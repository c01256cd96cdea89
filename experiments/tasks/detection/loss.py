"""YOLOv7's detection loss (``ComputeLossOTA`` / ``ComputeLoss`` of WongKinYiu/yolov7, rewritten).

Per level i, over the positives the assigner picks:
  box: mean(1 - CIoU(predicted box, target box));
  cls: BCE of the class logits against the one-hot class, mean over positives x classes;
  obj: BCE of the objectness logits over every prediction of the level, target = the detached
       CIoU (clamped at 0) at positives and 0 elsewhere (YOLO's gr = 1.0), weighted by balance[i].
Total = (box_gain * sum_i box_i + obj_gain * sum_i balance_i obj_i + cls_gain * sum_i cls_i) x batch size.

Gains. ``data/hyp.scratch.tiny.yaml`` sets box 0.05, obj 1.0, cls 0.5, and ``train.py`` scales them
by the number of levels nl, classes nc and image size: box *= 3 / nl; cls *= nc / 80 * 3 / nl;
obj *= (img_size / 640)^2 * 3 / nl. With nl = 3, nc = 20, 320 pixels: box 0.05, cls 0.125, obj 0.25,
the defaults here (pass a gain to override it).

Shapes. The assignment runs on fixed shapes (``dense_candidates`` and ``dense_ota_assign`` in
``experiments.tasks.detection.assign``): two host syncs per call on CUDA instead of ~60, the same positives as
the per-level ``ratio_assign``/``ota_assign`` (tests/experiments/tasks/detection/test_loss.py).

Scale. Like YOLOv7, the returned loss is that sum times the batch size (YOLOv7's gradients, and
so its learning rates, refer to this scale); the components dict holds the three gained terms
before the batch-size factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from experiments.tasks.detection.assign import (
    _OFFSETS,
    LevelMatches,
    decode_at,
    dense_candidates,
    dense_ota_assign,
    dense_ratio_assign,
    flatten_levels,
    level_offsets,
    ota_assign,
    ratio_assign,
)
from experiments.tasks.detection.boxes import paired_ciou

# hyp.scratch.tiny.yaml, before train.py's scaling.
BASE_BOX_GAIN, BASE_OBJ_GAIN, BASE_CLS_GAIN = 0.05, 1.0, 0.5


class YoloLoss:
    """``loss_fn(preds, targets) -> (loss, {"box", "obj", "cls"})`` for YOLOv7-style heads.

    ``preds``: per level a raw (B, anchors, H/s, W/s, 5 + classes) tensor; ``targets``: float (N, 6)
    rows [image_index, class, cx, cy, w, h] in input pixels. Works on whatever device the inputs
    are on; computes in float32 whatever the autocast dtype of ``preds``.
    """

    def __init__(
        self,
        anchors: torch.Tensor,
        strides: tuple[int, ...],
        num_classes: int,
        img_size: int = 320,
        assigner: str = "ota",
        box_gain: float | None = None,
        obj_gain: float | None = None,
        cls_gain: float | None = None,
        balance: tuple[float, ...] = (4.0, 1.0, 0.4),
        anchor_t: float = 4.0,
        ota_topk: int = 10,
        ota_iou_weight: float = 3.0,
    ) -> None:
        if assigner not in ("ota", "ratio"):
            raise ValueError(
                f"Unknown assigner {assigner!r}; choose 'ota' (YOLOv7-tiny's default) or 'ratio'."
            )
        anchors = torch.as_tensor(anchors, dtype=torch.float32).detach().clone()
        nl = anchors.shape[0]
        if len(strides) != nl or len(balance) != nl:
            raise ValueError(
                f"anchors have {nl} levels but strides {tuple(strides)} and balance {tuple(balance)} "
                "must have one entry per level."
            )
        self.anchors = anchors
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = num_classes
        self.assigner = assigner
        self.balance = tuple(balance)
        self.anchor_t = anchor_t
        self.ota_topk = ota_topk
        self.ota_iou_weight = ota_iou_weight
        self.box_gain = BASE_BOX_GAIN * 3 / nl if box_gain is None else box_gain
        self.cls_gain = BASE_CLS_GAIN * num_classes / 80 * 3 / nl if cls_gain is None else cls_gain
        self.obj_gain = BASE_OBJ_GAIN * (img_size / 640) ** 2 * 3 / nl if obj_gain is None else obj_gain
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def assign(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[LevelMatches]:
        """Positives per level by the readable per-level assigners (``experiments.tasks.detection.assign``); the
        loss itself uses their fixed-shape twins, which pick the same positives."""
        grid_sizes = [(p.shape[2], p.shape[3]) for p in preds]
        anchors = self.anchors.to(targets.device)
        matches = ratio_assign(targets, anchors, self.strides, grid_sizes, self.anchor_t)
        if self.assigner == "ota":
            matches = ota_assign(
                preds, targets, anchors, self.strides, matches, self.num_classes,
                self.ota_topk, self.ota_iou_weight,
            )  # fmt: skip
        return matches

    def __call__(
        self, preds: list[torch.Tensor], targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on fixed shapes: two host syncs on CUDA (the target check and the list of positives)."""
        self._check(preds, targets)
        preds = [p.float() for p in preds]
        device = preds[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        shapes = [p.shape for p in preds]
        flat = flatten_levels(preds)  # (rows of every level, 5 + classes)
        with torch.no_grad():
            anchors, offsets = self._constants(device)
            candidates = dense_candidates(targets, anchors, self.strides, shapes, offsets, self.anchor_t)
            if self.assigner == "ota":
                pos = dense_ota_assign(
                    flat, targets, candidates, self.num_classes, self.ota_topk, self.ota_iou_weight
                )
            else:
                pos = dense_ratio_assign(candidates)

        nl = len(preds)
        # Per-level sums over the positives by a one-hot product: deterministic, no atomics, no sync.
        onehot = (pos.level[:, None] == torch.arange(nl, device=device)).float()  # (n, nl)
        count = onehot.sum(0).clamp(min=1)
        ps = flat[pos.key]
        pbox = decode_at(ps, pos.gy, pos.gx, pos.anchor_wh, pos.stride[:, None])
        ciou = paired_ciou(pbox, targets[pos.target, 2:6])
        lbox = ((1.0 - ciou) @ onehot / count).sum()
        lcls = flat.new_zeros(())
        if self.num_classes > 1:  # YOLO skips the class loss for one class
            classes = torch.arange(self.num_classes, device=device)
            # one-hot by comparison: F.one_hot checks the labels' range with a host sync
            tcls = (targets[pos.target, 1].long()[:, None] == classes).float()
            bce = F.binary_cross_entropy_with_logits(ps[:, 5:], tcls, reduction="none").sum(1)
            lcls = (bce @ onehot / (count * self.num_classes)).sum()
        tobj = torch.zeros_like(flat[:, 4])
        tobj[pos.key] = ciou.detach().clamp(min=0)  # duplicates (ratio assigner): the last one wins
        lobj = flat.new_zeros(())
        for level, (start, shape) in enumerate(zip(level_offsets(shapes), shapes)):
            rows = slice(start, start + shape[:4].numel())
            lobj = lobj + self.balance[level] * F.binary_cross_entropy_with_logits(flat[rows, 4], tobj[rows])

        parts = {"box": self.box_gain * lbox, "obj": self.obj_gain * lobj, "cls": self.cls_gain * lcls}
        loss = (parts["box"] + parts["obj"] + parts["cls"]) * preds[0].shape[0]
        return loss, {k: v.detach() for k, v in parts.items()}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchors and cell offsets on ``device``, copied there once (a blocking copy per step otherwise)."""
        if device not in self._on_device:
            self._on_device[device] = (self.anchors.to(device), torch.tensor(_OFFSETS, device=device))
        return self._on_device[device]

    def _check(self, preds: list[torch.Tensor], targets: torch.Tensor) -> None:
        if len(preds) != len(self.strides):
            raise ValueError(f"Expected {len(self.strides)} prediction levels, got {len(preds)}.")
        want = 5 + self.num_classes
        for p in preds:
            if p.ndim != 5 or p.shape[1] != self.anchors.shape[1] or p.shape[-1] != want:
                raise ValueError(
                    f"Each prediction level must be (B, {self.anchors.shape[1]}, H, W, {want}); got "
                    f"{tuple(p.shape)} (is num_classes={self.num_classes} the model's?)."
                )
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                f"targets must be (N, 6) rows [image_index, class, cx, cy, w, h] in pixels, got {tuple(targets.shape)}."
            )
        cls = targets[:, 1]
        if targets.numel() and bool(((cls < 0) | (cls >= self.num_classes)).any()):  # one host sync
            raise ValueError(
                f"Target classes must lie in [0, {self.num_classes}), got "
                f"{targets[:, 1].min().item():g}..{targets[:, 1].max().item():g}."
            )
