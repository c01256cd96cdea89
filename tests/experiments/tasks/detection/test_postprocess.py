"""Box maths, decoding (round trip through the assigner) and NMS."""

import math

import pytest
import torch

from experiments.tasks.detection.assign import ratio_assign
from experiments.tasks.detection.boxes import box_iou, paired_ciou, paired_iou, xywh_to_xyxy, xyxy_to_xywh
from experiments.tasks.detection.postprocess import decode, nms
from models.yolov7_tiny import DEFAULT_ANCHORS

ANCHORS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
STRIDES = (8, 16, 32)


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def encode(box: torch.Tensor, gx: int, gy: int, anchor: torch.Tensor, stride: int) -> torch.Tensor:
    """Raw (tx, ty, tw, th) that decode to ``box`` (cx, cy, w, h pixels) at cell (gx, gy) with ``anchor``."""
    sxy = (box[:2] / stride - torch.tensor([gx, gy], dtype=box.dtype) + 0.5) / 2
    swh = torch.sqrt(box[2:4] / anchor) / 2
    return logit(torch.cat([sxy, swh]))


def empty_preds(batch: int, size: int, nc: int) -> list[torch.Tensor]:
    return [torch.full((batch, 3, size // s, size // s, 5 + nc), -8.0) for s in STRIDES]


def test_xywh_xyxy_round_trip_and_iou():
    b = torch.tensor([[10.0, 20.0, 4.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.equal(xywh_to_xyxy(b)[0], torch.tensor([8.0, 17.0, 12.0, 23.0]))
    assert torch.allclose(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    c = torch.tensor([[1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    assert torch.allclose(box_iou(a, c), torch.tensor([[2 / 6, 0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(paired_iou(a.expand(3, 4), c), box_iou(a, c)[0], atol=1e-6)


def test_ciou_is_one_for_equal_boxes_and_penalises_distance_and_shape():
    t = torch.tensor([[50.0, 50.0, 20.0, 40.0]])
    assert paired_ciou(t, t).item() == pytest.approx(1.0, abs=1e-5)
    shifted = torch.tensor([[55.0, 50.0, 20.0, 40.0]])
    iou = paired_iou(xywh_to_xyxy(shifted), xywh_to_xyxy(t)).item()
    # distance term: d^2 / c^2 = 25 / (25^2 + 40^2); no aspect term (same shape)
    assert paired_ciou(shifted, t).item() == pytest.approx(iou - 25 / (25**2 + 40**2), abs=1e-5)
    squat = torch.tensor([[50.0, 50.0, 40.0, 20.0]])
    assert paired_ciou(squat, t).item() < paired_iou(xywh_to_xyxy(squat), xywh_to_xyxy(t)).item()


def test_decode_with_zero_logits_gives_cell_centres_and_anchors():
    preds = [torch.zeros(1, 3, 320 // s, 320 // s, 7) for s in STRIDES]
    d = decode(preds, ANCHORS, STRIDES)
    assert d.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 7)
    # level 0, anchor 1, row 2, column 5: centre ((0.5 + 5) * 8, (0.5 + 2) * 8), size = anchor
    i = 1 * 40 * 40 + 2 * 40 + 5
    assert torch.allclose(d[0, i, :4], torch.tensor([44.0, 20.0, 16.0, 30.0]))
    assert torch.allclose(d[0, :, 4:], torch.full_like(d[0, :, 4:], 0.5))
    # level 2 starts after the first two levels
    j = 3 * (40 * 40 + 20 * 20) + 2 * 100 + 9 * 10 + 3
    assert torch.allclose(d[0, j, :4], torch.tensor([(3.5) * 32, 9.5 * 32, 373.0, 326.0]))


def test_decode_round_trip_through_assigned_anchors_and_cells():
    boxes = torch.tensor(
        [
            [98.0, 102.0, 12.0, 16.0],
            [250.0, 60.0, 90.0, 70.0],
            [160.0, 170.0, 300.0, 250.0],
            [5.0, 315.0, 9.0, 8.0],
        ]
    )
    targets = torch.cat([torch.tensor([[0.0, 1], [1, 0], [1, 2], [0, 1]]), boxes], dim=1)
    matches = ratio_assign(targets, ANCHORS, STRIDES, [(40, 40), (20, 20), (10, 10)])
    assert sum(len(m) for m in matches) >= 4 * 3
    for level, m in enumerate(matches):
        stride = STRIDES[level]
        for b, a, gy, gx, t in zip(m.image, m.anchor, m.gy, m.gx, m.target):
            preds = empty_preds(2, 320, 3)
            preds[level][b, a, gy, gx, :4] = encode(boxes[t], int(gx), int(gy), ANCHORS[level, a], stride)
            preds[level][b, a, gy, gx, 4] = 3.0
            preds[level][b, a, gy, gx, 5 + int(targets[t, 1])] = 2.0
            d = decode(preds, ANCHORS, STRIDES)
            n_before = sum(3 * (320 // s) ** 2 for s in STRIDES[:level])
            flat = n_before + (int(a) * (320 // stride) + int(gy)) * (320 // stride) + int(gx)
            assert torch.allclose(d[b, flat, :4], boxes[t], atol=1e-3)
            assert d[b, flat, 4].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
            assert d[b, flat, 5 + int(targets[t, 1])].item() == pytest.approx(
                1 / (1 + math.exp(-2)), rel=1e-5
            )
            # the decoded box is the best-scoring one NMS returns
            det = nms(d)[int(b)]
            assert torch.allclose(det[0, :4], xywh_to_xyxy(boxes[t]), atol=1e-3)
            assert det[0, 5].item() == targets[t, 1].item()


def make_decoded(rows: list[list[float]], nc: int) -> torch.Tensor:
    """(1, n, 5 + nc) decoded tensor from rows [cx, cy, w, h, obj, cls probs...]."""
    return torch.tensor(rows, dtype=torch.float32).view(1, len(rows), 5 + nc)


def test_nms_removes_duplicates_and_keeps_classes_apart():
    d = make_decoded(
        [
            [50, 50, 20, 20, 0.9, 0.9, 0.1],  # class 0, score 0.81
            [51, 50, 20, 20, 0.8, 0.9, 0.1],  # duplicate of the first (IoU ~0.9), lower score
            [51, 50, 20, 20, 0.8, 0.1, 0.9],  # same place, class 1: survives
            [150, 150, 20, 20, 0.5, 0.8, 0.0],  # far away, class 0: survives
            [150, 150, 20, 20, 0.0005, 0.9, 0.9],  # objectness under the threshold: dropped
        ],
        nc=2,
    )
    (det,) = nms(d)
    assert det.shape == (3, 6)
    assert torch.allclose(det[:, 4], torch.tensor([0.81, 0.72, 0.40]))
    assert det[:, 5].tolist() == [0.0, 1.0, 0.0]
    assert torch.allclose(det[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))


def test_nms_multi_label_and_max_det():
    d = make_decoded([[50, 50, 20, 20, 1.0, 0.7, 0.6], [120, 50, 20, 20, 1.0, 0.5, 0.0]], nc=2)
    assert nms(d)[0][:, 5].tolist() == [0.0, 0.0]  # best class only
    both = nms(d, multi_label=True)[0]
    assert both.shape[0] == 3 and sorted(both[:, 5].tolist()) == [0.0, 0.0, 1.0]
    assert nms(d, multi_label=True, max_det=2)[0].shape[0] == 2
    assert nms(d, conf_thres=0.65)[0].shape[0] == 1


def test_nms_handles_empty_images():
    d = torch.zeros(2, 10, 7)
    out = nms(d)
    assert len(out) == 2 and all(o.shape == (0, 6) for o in out)
