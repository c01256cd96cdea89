"""Detection evaluation in YOLOv7's mAP mode (test.py calls non_max_suppression with multi_label=True):
each box yields one detection per class whose obj x cls score is > conf_thres (YOLOv7 compares
strictly), then NMS per class. Checked against a by-hand definition on hand-made boxes."""

import torch

from experiments.detection.boxes import box_iou, xywh_to_xyxy
from experiments.detection.postprocess import nms
from experiments.tasks.detection import DetectionTask


def by_definition(decoded, conf_thres, iou_thres, max_det):
    """Every (box, class) with obj > t and obj * cls > t, greedy NMS within each class, best max_det."""
    x = decoded[0]
    boxes = xywh_to_xyxy(x[:, :4])
    kept = []
    for c in range(x.shape[1] - 5):
        cand = [(float(x[i, 4] * x[i, 5 + c]), i) for i in range(len(x))]
        cand = sorted((s, i) for s, i in cand if x[i, 4] > conf_thres and s > conf_thres)[::-1]
        chosen = []
        for s, i in cand:
            if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= iou_thres for _, j in chosen):
                chosen.append((s, i))
        kept += [(s, i, c) for s, i in chosen]
    kept = sorted(kept, reverse=True)[:max_det]
    return [(i, c, round(s, 6)) for s, i, c in kept]


def as_rows(dets, decoded):
    boxes = xywh_to_xyxy(decoded[0, :, :4])
    rows = []
    for d in dets[0]:
        i = int(((boxes - d[:4]).abs().sum(1)).argmin())
        rows.append((i, int(d[5]), round(float(d[4]), 6)))
    return rows


def test_multi_label_equals_the_definition_on_hand_made_boxes():
    # box: cx, cy, w, h, objectness, 3 class probabilities
    decoded = torch.tensor(
        [
            [
                [50, 50, 40, 40, 0.9, 0.8, 0.7, 0.01],  # two classes above threshold
                [52, 51, 40, 40, 0.8, 0.85, 0.1, 0.5],  # overlaps box 0: suppressed in class 0 only
                [150, 150, 30, 30, 0.5, 0.5, 0.5, 0.2],  # 0.25 == conf_thres: not kept (strict >)
                [200, 40, 20, 20, 0.2, 0.9, 0.9, 0.9],  # objectness below the threshold
                [100, 100, 10, 10, 0.6, 0.3, 0.65, 0.6],  # two detections: 0.18 is below
            ]
        ]
    )
    conf, iou = 0.25, 0.5
    got = as_rows(nms(decoded, conf, iou, max_det=300, multi_label=True), decoded)
    want = by_definition(decoded, conf, iou, 300)
    assert got == want
    assert {(i, c) for i, c, _ in got} == {(0, 0), (0, 1), (1, 2), (4, 1), (4, 2)}
    # best-class mode keeps one detection per box
    single = as_rows(nms(decoded, conf, iou, max_det=300, multi_label=False), decoded)
    assert [(i, c) for i, c, _ in single] == [(0, 0), (4, 1)]


def test_multi_label_equals_the_definition_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    n, nc = 60, 4
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 5
    probs = torch.rand(n, 1 + nc, generator=g)
    decoded = torch.cat([xy, wh, probs], 1)[None]
    for max_det in (300, 7):
        got = as_rows(nms(decoded, 0.2, 0.45, max_det=max_det, multi_label=True), decoded)
        assert got == by_definition(decoded, 0.2, 0.45, max_det)


def test_detection_task_evaluates_in_multi_label_mode_by_default():
    assert DetectionTask(num_classes=3).multi_label is True
