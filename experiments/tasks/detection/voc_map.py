"""Mean average precision on PASCAL VOC: the devkit's all-point AP (the paper's Eq. 20) and COCO's 101-point
AP through pycocotools, on the same detections.

VOC protocol, per class: detections sorted by score; each takes the ground-truth box of its image and class
with the highest IoU; if that IoU >= T and the box is difficult the detection is ignored (neither TP nor
FP), if the box is free it is a TP and the box becomes taken, otherwise (taken, or IoU < T) a FP. Difficult
boxes are not positives. AP is the area under the monotone precision envelope of the PR curve.

Because a detection's best box does not depend on which boxes are taken, "free" is exactly "no earlier
detection picked this box", so matching is a sort plus a first-occurrence test: no Python loop over
detections (only over images for the IoU matrices, and over classes).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

IOU_THRESHOLDS = (0.5, 0.75)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes in continuous coordinates."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone (non-increasing) precision envelope of a PR curve (VOC2010+ devkit)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def _flatten(
    detections: Sequence[np.ndarray], ground_truths: Sequence[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """Concatenate per-image arrays; per detection, its best same-class box (global index) and that IoU."""
    det_score, det_cls, best_iou, best_gt = [], [], [], []
    gt_cls, gt_diff = [], []
    offset = 0
    for det, gt in zip(detections, ground_truths, strict=True):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(gt["labels"], dtype=np.int64).reshape(-1)
        difficult = np.asarray(gt.get("difficult", np.zeros(len(labels))), dtype=bool).reshape(-1)
        cls = det[:, 5].astype(np.int64)
        if len(boxes) and len(det):
            iou = box_iou(det[:, :4], boxes)
            iou[cls[:, None] != labels[None, :]] = -1.0
            arg = iou.argmax(axis=1)
            best_iou.append(iou[np.arange(len(det)), arg])
            best_gt.append(arg + offset)
        else:
            best_iou.append(np.full(len(det), -1.0))
            best_gt.append(np.full(len(det), -1, dtype=np.int64))
        det_score.append(det[:, 4])
        det_cls.append(cls)
        gt_cls.append(labels)
        gt_diff.append(difficult)
        offset += len(labels)
    cat = np.concatenate
    return {
        "score": cat(det_score) if det_score else np.zeros(0),
        "cls": cat(det_cls) if det_cls else np.zeros(0, dtype=np.int64),
        "best_iou": cat(best_iou) if best_iou else np.zeros(0),
        "best_gt": cat(best_gt) if best_gt else np.zeros(0, dtype=np.int64),
        "gt_cls": cat(gt_cls) if gt_cls else np.zeros(0, dtype=np.int64),
        "gt_diff": cat(gt_diff) if gt_diff else np.zeros(0, dtype=bool),
    }


def voc_ap_per_class(
    detections: Sequence[np.ndarray],
    ground_truths: Sequence[dict[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """All-point AP of every class (NaN for a class without non-difficult boxes).

    ``detections[i]``: (n, 6) ``[x1, y1, x2, y2, score, class]`` for image i; ``ground_truths[i]``:
    ``{"boxes": (m, 4) xyxy, "labels": (m,), "difficult": (m,) bool}`` in the same coordinates.
    """
    f = _flatten(detections, ground_truths)
    return _ap_from_flat(f, num_classes, iou_threshold)


def _ap_from_flat(f: dict[str, np.ndarray], num_classes: int, iou_threshold: float) -> np.ndarray:
    order = np.lexsort((-f["score"], f["cls"]))  # by class, then score descending (ties: input order)
    cls, best_iou, best_gt = f["cls"][order], f["best_iou"][order], f["best_gt"][order]
    hit = best_iou >= iou_threshold
    safe_gt = np.where(hit, best_gt, 0)
    difficult = hit & (f["gt_diff"][safe_gt] if len(f["gt_diff"]) else np.zeros_like(hit))
    candidate = hit & ~difficult
    tp = np.zeros(len(cls), dtype=bool)
    cand_idx = np.flatnonzero(candidate)
    _, first = np.unique(best_gt[cand_idx], return_index=True)  # earliest detection per box wins it
    tp[cand_idx[first]] = True
    counted = ~difficult  # ignored detections leave the PR curve
    npos = np.bincount(f["gt_cls"][~f["gt_diff"]], minlength=num_classes)
    bounds = np.searchsorted(cls, np.arange(num_classes + 1))
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if npos[c] == 0:
            continue
        sl = slice(bounds[c], bounds[c + 1])
        keep = counted[sl]
        tps = np.cumsum(tp[sl][keep])
        fps = np.cumsum(~tp[sl][keep])
        ap[c] = all_point_ap(tps / npos[c], tps / np.maximum(tps + fps, 1)) if len(tps) else 0.0
    return ap


def voc_map(
    detections: Sequence[np.ndarray],
    ground_truths: Sequence[dict[str, Any]],
    num_classes: int,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[float, float]:
    """VOC mAP at each IoU threshold: mean all-point AP over the classes that have positives."""
    f = _flatten(detections, ground_truths)
    out = {}
    for t in iou_thresholds:
        ap = _ap_from_flat(f, num_classes, t)
        out[t] = float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0
    return out


def coco_map(
    detections: Sequence[np.ndarray],
    ground_truths: Sequence[dict[str, Any]],
    num_classes: int,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    max_det: int = 300,
) -> dict[float, float]:
    """COCO's 101-point interpolated mAP (pycocotools) at each IoU threshold; difficult boxes are
    ``iscrowd=1`` (ignored, not positives), area range "all", up to ``max_det`` detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (det, gt) in enumerate(zip(detections, ground_truths, strict=True)):
        images.append({"id": i + 1})
        boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        difficult = np.asarray(gt.get("difficult", np.zeros(len(boxes))), dtype=bool).reshape(-1)
        for box, label, crowd in zip(boxes, np.asarray(gt["labels"]).reshape(-1), difficult):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        if len(det):
            rows = np.column_stack(
                [np.full(len(det), i + 1), det[:, :2], det[:, 2:4] - det[:, :2], det[:, 4:6]]
            )
            rows[:, 6] += 1
            results.append(rows)
    if not annotations:
        return {t: 0.0 for t in iou_thresholds}
    gt_api = COCO()
    gt_api.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api.createIndex()
        if not results:
            return {t: 0.0 for t in iou_thresholds}
        dt_api = gt_api.loadRes(np.concatenate(results))
        ev = COCOeval(gt_api, dt_api, iouType="bbox")
        ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        ev.params.maxDets = [max_det]
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]  # (T, R=101, K)
    out = {}
    for ti, t in enumerate(iou_thresholds):
        p = precision[ti]
        valid = (p > -1).all(axis=0)  # classes with positives
        out[t] = float(p[:, valid].mean()) if valid.any() else 0.0
    return out
