"""Detection at its boundaries, with hand-computed values: VOC matching exactly at the IoU threshold,
difficult boxes above and below it, duplicates and taken boxes; CIoU far from 1 (apart, disjoint,
nested) alone and inside the loss; exact box conversions; the anchor-ratio and neighbour-cell limits of
the assigners; NMS exactly at its score and IoU thresholds."""

import math

import numpy as np
import pytest
import torch

from experiments.tasks.detection.assign import _OFFSETS, dense_candidates, ratio_assign
from experiments.tasks.detection.boxes import box_iou, paired_ciou, paired_iou, xywh_to_xyxy, xyxy_to_xywh
from experiments.tasks.detection.loss import YoloLoss
from experiments.tasks.detection.postprocess import nms
from experiments.tasks.detection.task import DetectionTask, to_original
from experiments.tasks.detection.voc_map import all_point_ap, voc_ap_per_class, voc_map
from tests.experiments.tasks.detection.test_voc_map import (  # the hand-made ground truth and detections of the mAP tests
    dets,
    gt,
)

# ------------------------------------------------------------------ VOC matching


def test_detection_exactly_at_the_iou_threshold_is_a_true_positive():
    """Catches '>' for '>=' in the VOC07 overlap test (ovmax >= threshold is a hit)."""
    gts = [gt([[0, 0, 100, 100]], [0])]
    half = [dets([[0, 0, 100, 50, 0.9, 0]])]  # IoU = 5000 / 10000 = 0.5 exactly
    assert voc_map(half, gts, 2) == {0.5: 1.0, 0.75: 0.0}
    three_quarters = [dets([[0, 0, 100, 75, 0.9, 0]])]  # IoU = 7500 / 10000 = 0.75 exactly
    assert voc_map(three_quarters, gts, 2) == {0.5: 1.0, 0.75: 1.0}
    below = [dets([[0, 0, 100, 49.9, 0.9, 0]])]  # IoU = 0.499
    assert voc_map(below, gts, 2) == {0.5: 0.0, 0.75: 0.0}


def test_difficult_box_ignores_a_hit_at_the_threshold_but_not_a_miss_below_it():
    """Catches a difficult box swallowing detections that do not reach the threshold (VOC: those are FP)."""
    gts = [gt([[0, 0, 100, 100], [200, 0, 300, 100]], [0, 0], difficult=[True, False])]
    on_difficult = [dets([[0, 0, 100, 50, 0.9, 0], [200, 0, 300, 100, 0.8, 0]])]  # IoU 0.5 with difficult
    assert voc_ap_per_class(on_difficult, gts, 1, 0.5)[0] == 1.0  # ignored: the TP alone is the curve
    near_difficult = [dets([[0, 0, 100, 40, 0.9, 0], [200, 0, 300, 100, 0.8, 0]])]  # IoU 0.4: FP
    # FP then TP: recall 0 then 1 at precision 1/2 -> AP = 1/2
    assert voc_ap_per_class(near_difficult, gts, 1, 0.5)[0] == pytest.approx(0.5, abs=1e-12)


def test_duplicate_and_taken_box_are_false_positives_without_fallback():
    """Catches a duplicate counted twice, and a detection falling back to its second-best box when its
    best one is taken (the devkit marks it FP)."""
    a, b = [0, 0, 100, 100], [0, 10, 100, 110]
    gts = [gt([a, b], [0, 0])]
    # det 2 overlaps A (IoU 9800 / 10200 = 0.96) more than B (9200 / 10800 = 0.85); A is taken: FP
    ds = [dets([[*a, 0.9, 0], [0, 2, 100, 102, 0.8, 0]])]
    assert voc_ap_per_class(ds, gts, 1, 0.5)[0] == pytest.approx(0.5, abs=1e-12)  # TP, FP of 2 positives
    # TP, FP (duplicate of A), TP (B): recall 1/2, 1/2, 1 at precision 1, 1/2, 2/3 -> 1/2 + 1/2 * 2/3
    ds = [dets([[*a, 0.9, 0], [*a, 0.8, 0], [*b, 0.7, 0]])]
    assert voc_ap_per_class(ds, gts, 1, 0.5)[0] == pytest.approx(5 / 6, abs=1e-12)


def test_class_with_positives_and_no_detections_scores_zero_in_the_mean():
    """Catches an undetected class left out of the mean (NaN) instead of AP 0, and a class whose only
    boxes are difficult counted in it."""
    gts = [
        gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 1, 2], difficult=[False, False, True])
    ]
    ds = [dets([[0, 0, 10, 10, 0.9, 0], [40, 40, 50, 50, 0.8, 2]])]
    ap = voc_ap_per_class(ds, gts, 3, 0.5)
    assert ap[0] == 1.0 and ap[1] == 0.0 and np.isnan(ap[2])
    assert voc_map(ds, gts, 3)[0.5] == pytest.approx(0.5, abs=1e-12)


def test_all_point_ap_uses_the_envelope_at_each_recall_step():
    """Catches the envelope being skipped or sampled left of each recall step."""
    # recall .25, .5, .75 at precision 1, .5, .6: envelope 1, .6, .6 -> .25 + .25 * .6 + .25 * .6
    assert all_point_ap(np.array([0.25, 0.5, 0.75]), np.array([1.0, 0.5, 0.6])) == pytest.approx(0.55)
    assert all_point_ap(np.array([1.0]), np.array([0.25])) == pytest.approx(0.25)


# ------------------------------------------------------------------ boxes and CIoU


def test_box_conversions_and_iou_exact_numbers():
    """Catches a half-size slip (w instead of w / 2) or swapped x/y in the conversions."""
    assert xyxy_to_xywh(torch.tensor([[1.0, 2.0, 5.0, 10.0]])).tolist() == [[3.0, 6.0, 4.0, 8.0]]
    assert xywh_to_xyxy(torch.tensor([[3.0, 6.0, 4.0, 8.0]])).tolist() == [[1.0, 2.0, 5.0, 10.0]]
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    others = torch.tensor(
        [[2, 2, 6, 6], [4, 0, 8, 4], [1, 1, 3, 3], [0, 0, 4, 2]], dtype=torch.float64
    )  # partial 4/28, touching 0, nested 4/16, half 8/16
    expected = [1 / 7, 0.0, 0.25, 0.5]
    assert box_iou(a, others)[0].tolist() == pytest.approx(expected, abs=1e-7)
    assert paired_iou(a.expand(4, 4), others).tolist() == pytest.approx(expected, abs=1e-7)


def ciou_reference(p, t):
    """CIoU of two (cx, cy, w, h) boxes in plain float64 (Zheng et al., 2020)."""
    px1, py1, px2, py2 = p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2
    tx1, ty1, tx2, ty2 = t[0] - t[2] / 2, t[1] - t[3] / 2, t[0] + t[2] / 2, t[1] + t[3] / 2
    inter = max(0.0, min(px2, tx2) - max(px1, tx1)) * max(0.0, min(py2, ty2) - max(py1, ty1))
    iou = inter / (p[2] * p[3] + t[2] * t[3] - inter)
    c2 = (max(px2, tx2) - min(px1, tx1)) ** 2 + (max(py2, ty2) - min(py1, ty1)) ** 2
    d2 = (p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
    v = 4 / math.pi**2 * (math.atan(t[2] / t[3]) - math.atan(p[2] / p[3])) ** 2
    alpha = v / (1 - iou + v) if v else 0.0
    return iou - d2 / c2 - alpha * v


@pytest.mark.parametrize(
    "pred, target, by_hand",
    [
        ((0, 0, 2, 2), (10, 0, 2, 2), -100 / 148),  # apart: IoU 0, d^2 100, c^2 12^2 + 2^2
        ((0, 0, 2, 4), (6, 0, 4, 2), None),  # disjoint with other aspect: alpha = v / (1 + v)
        ((1, 0, 2, 1), (0, 0, 4, 4), None),  # nested off-centre: IoU 2/16, d^2 1, c^2 32
        ((12, 12, 4, 4), (10, 10, 4, 4), 1 / 7 - 8 / 72),  # overlapping corner
        ((4, 12, 4, 4), (10, 10, 4, 4), -40 / 136),
    ],
)
def test_ciou_far_from_one_matches_the_formula(pred, target, by_hand):
    """Catches a sign slip in the distance or aspect term, alpha from the wrong IoU, or c from the union."""
    got = paired_ciou(torch.tensor([pred], dtype=torch.float64), torch.tensor([target], dtype=torch.float64))
    ref = ciou_reference(pred, target)
    if by_hand is not None:
        assert ref == pytest.approx(by_hand, abs=1e-12)
    assert got.item() == pytest.approx(ref, abs=1e-6)
    assert got.item() < 0.2  # far from the 1 of identical boxes


def test_ciou_nested_and_disjoint_hand_values():
    """Catches the aspect term left out (its value is checked by hand, not via the reference)."""
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2  # w/h: target 4/4, pred 2/1
    nested = 0.125 - 1 / 32 - v / (1 - 0.125 + v) * v
    got = paired_ciou(
        torch.tensor([[1.0, 0.0, 2.0, 1.0]], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=torch.float64),
    )
    assert got.item() == pytest.approx(nested, abs=1e-6)
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(0.5)) ** 2
    disjoint = -36 / 97 - v / (1 + v) * v  # enclosing box 9 x 4, centres 6 apart
    got = paired_ciou(
        torch.tensor([[0.0, 0.0, 2.0, 4.0]], dtype=torch.float64),
        torch.tensor([[6.0, 0.0, 4.0, 2.0]], dtype=torch.float64),
    )
    assert got.item() == pytest.approx(disjoint, abs=1e-6)


def _one_level_loss(anchor: float = 4.0, **gains):
    """One level, stride 8, one square anchor (4 x 4 px unless told), one class; ratio assignment."""
    return YoloLoss(torch.tensor([[[anchor, anchor]]]), (8,), 1, assigner="ratio", balance=(1.0,), **gains)


# Target (10, 10, 4, 4): grid (1.25, 1.25) -> own cell (1, 1), left (0, 1) and upper (1, 0) neighbours.
# Zero raw outputs decode to the anchor (4 x 4) at each cell centre: (12, 12), (4, 12), (12, 4).
TARGET = torch.tensor([[0.0, 0.0, 10.0, 10.0, 4.0, 4.0]])
CIOUS = [1 / 7 - 8 / 72, -40 / 136, -40 / 136]


def test_box_loss_is_one_minus_ciou_of_positives_far_from_the_target():
    """Catches a box loss that clamps or drops negative CIoUs, or averages over the wrong count."""
    preds = [torch.zeros(1, 1, 4, 4, 6)]
    loss, parts = _one_level_loss(box_gain=1.0, obj_gain=0.0, cls_gain=0.0)(preds, TARGET)
    expected = sum(1 - c for c in CIOUS) / 3  # = 1.1855
    assert parts["box"].item() == pytest.approx(expected, abs=1e-5)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_box_loss_of_a_level_with_exactly_one_positive_is_not_divided_further():
    """Catches the per-level positive count floored at more than one (clamp(min=2) halves this loss)."""
    # Target (44, 44, 6, 6) on a 10 x 10 grid, stride 8: grid (5.5, 5.5), own cell only, one positive.
    # Zero raw outputs decode to the 8 x 8 anchor at (44, 44): same centre and shape, IoU 36/64.
    loss_fn = _one_level_loss(anchor=8.0, box_gain=1.0, obj_gain=0.0, cls_gain=0.0)
    _, parts = loss_fn([torch.zeros(1, 1, 10, 10, 6)], torch.tensor([[0.0, 0.0, 44.0, 44.0, 6.0, 6.0]]))
    assert parts["box"].item() == pytest.approx(1 - 36 / 64, abs=1e-6)


def test_objectness_target_is_ciou_clamped_at_zero():
    """Catches the objectness target taking a negative CIoU (or 1) at positives far from their box."""
    preds = [torch.zeros(1, 1, 4, 4, 6)]
    preds[0][..., 4] = 1.0  # BCE(logit 1, t) = log(1 + e) - t, so the mean over 16 rows reads sum(t)
    _, parts = _one_level_loss(box_gain=0.0, obj_gain=1.0, cls_gain=0.0)(preds, TARGET)
    expected = math.log(1 + math.e) - max(CIOUS[0], 0.0) / 16  # the two negative CIoUs give target 0
    assert parts["obj"].item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ assignment limits


def _cells(targets, anchors, grid=(10, 10), stride=8):
    """(anchor, gx, gy) sets of ratio_assign and of its dense twin, which must agree."""
    m = ratio_assign(targets, anchors, (stride,), [grid])[0]
    per_level = set(zip(m.anchor.tolist(), m.gx.tolist(), m.gy.tolist()))
    shapes = [torch.Size([1, anchors.shape[1], grid[0], grid[1], 6])]
    c = dense_candidates(targets, anchors, (stride,), shapes, torch.tensor(_OFFSETS), 4.0)
    dense = set(zip(c.anchor[c.valid].tolist(), c.gx[c.valid].tolist(), c.gy[c.valid].tolist()))
    assert dense == per_level
    return per_level


@pytest.mark.parametrize(
    "w, h, fits",
    [(32.0, 8.0, False), (31.9, 8.0, True), (8.0, 2.0, False), (8.0, 2.01, True), (8.0, 8.0, True)],
)
def test_anchor_ratio_exactly_four_does_not_match(w, h, fits):
    """Catches '<=' for '<' at anchor_t (YOLOv5/v7: max ratio < 4) and a ratio taken one way only."""
    anchors = torch.tensor([[[8.0, 8.0]]])
    targets = torch.tensor([[0.0, 0.0, 44.0, 44.0, w, h]])  # grid (5.5, 5.5): own cell only
    assert _cells(targets, anchors) == ({(0, 5, 5)} if fits else set())


def test_neighbour_cells_at_grid_coordinate_exactly_one_and_below():
    """Catches 'gxy >= 1' for 'gxy > 1' (YOLOv5's rule: no left/upper neighbour at exactly 1.0)."""
    anchors = torch.tensor([[[8.0, 8.0]]])
    # (8, 20) -> grid (1.0, 2.5): x frac 0 but x is not > 1; y frac .5 is not < .5
    assert {(gx, gy) for _, gx, gy in _cells(torch.tensor([[0.0, 0.0, 8.0, 20.0, 8.0, 8.0]]), anchors)} == {
        (1, 2)
    }
    # (10, 20) -> grid (1.25, 2.5): left neighbour (0, 2) exists and is nearer
    assert {(gx, gy) for _, gx, gy in _cells(torch.tensor([[0.0, 0.0, 10.0, 20.0, 8.0, 8.0]]), anchors)} == {
        (1, 2),
        (0, 2),
    }
    # (76, 60) -> grid (9.5, 7.5) on a 10-wide grid: no right neighbour (x frac .5), none below
    assert {(gx, gy) for _, gx, gy in _cells(torch.tensor([[0.0, 0.0, 76.0, 60.0, 8.0, 8.0]]), anchors)} == {
        (9, 7)
    }
    # (74, 62) -> grid (9.25, 7.75): left (8, 7) and lower (9, 8)
    assert {(gx, gy) for _, gx, gy in _cells(torch.tensor([[0.0, 0.0, 74.0, 62.0, 8.0, 8.0]]), anchors)} == {
        (9, 7),
        (8, 7),
        (9, 8),
    }


# ------------------------------------------------------------------ NMS thresholds


def decoded(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, len(rows), len(rows[0]))


def test_score_exactly_at_conf_thres_is_dropped():
    """Catches '>=' for '>' on objectness or score (YOLOv7 keeps strictly above conf_thres)."""
    d = decoded(
        [
            [50, 50, 10, 10, 0.25, 1.0],  # objectness exactly 0.25: dropped
            [150, 50, 10, 10, 0.5, 0.5],  # score 0.5 * 0.5 = 0.25 exactly: dropped
            [250, 50, 10, 10, 0.5, 0.625],  # score 0.3125: kept
            [350, 50, 10, 10, 0.75, 0.25],  # objectness passes, score 0.1875 does not
        ]
    )
    (out,) = nms(d, conf_thres=0.25)
    assert out[:, :4].tolist() == [[245.0, 45.0, 255.0, 55.0]] and out[:, 4].tolist() == [0.3125]
    (multi,) = nms(d, conf_thres=0.25, multi_label=True)
    assert multi[:, 4].tolist() == [0.3125]


def test_nms_iou_threshold_is_strict_and_defaults_to_065():
    """Catches a wrong default iou_thres or a threshold applied as '>='."""
    d = decoded(
        [
            [50, 50, 100, 100, 0.9, 1.0],  # A = (0, 0, 100, 100)
            [50, 35, 100, 70, 0.8, 1.0],  # (0, 0, 100, 70): IoU 0.7 with A
            [250, 50, 100, 100, 0.9, 1.0],  # B = (200, 0, 300, 100)
            [250, 30, 100, 60, 0.8, 1.0],  # (200, 0, 300, 60): IoU 0.6 with B
            [450, 50, 100, 100, 0.9, 1.0],  # C = (400, 0, 500, 100)
            [450, 25, 100, 50, 0.8, 1.0],  # (400, 0, 500, 50): IoU 0.5 with C
        ]
    )
    (default,) = nms(d)  # 0.65: the 0.7 overlap goes, 0.6 and 0.5 stay
    assert default.shape[0] == 5 and [0.0, 0.0, 100.0, 70.0] not in default[:, :4].tolist()
    (at_half,) = nms(d, iou_thres=0.5)  # IoU exactly 0.5 is not above 0.5: kept
    assert at_half.shape[0] == 4 and [400.0, 0.0, 500.0, 50.0] in at_half[:, :4].tolist()
    (below,) = nms(d, iou_thres=0.49)
    assert below[:, 4].tolist() == pytest.approx([0.9, 0.9, 0.9])  # A, B, C alone
    (top2,) = nms(d, max_det=2)
    assert top2[:, 4].tolist() == pytest.approx([0.9, 0.9])


# ------------------------------------------------------------------ evaluation bookkeeping


def test_to_original_undoes_pad_then_scale_and_clips_to_a_non_square_image():
    """Catches pad and scale undone in the wrong order, x/y pads swapped, or h and w swapped in the clip."""
    meta = {"pad": (10.0, 20.0), "scale": 0.5, "orig_size": (100, 300)}  # (h, w)
    d = np.array([[10, 20, 110, 70, 0.9, 3], [0, 0, 200, 90, 0.8, 1]], dtype=np.float32)
    # row 1: x (10 - 10) / .5 = 0, (110 - 10) / .5 = 200; y (20 - 20) / .5 = 0, (70 - 20) / .5 = 100
    # row 2: x -20 -> 0, 380 -> 300 (w); y -40 -> 0, 140 -> 100 (h)
    expected = [[0, 0, 200, 100, 0.9, 3], [0, 0, 300, 100, 0.8, 1]]
    np.testing.assert_allclose(to_original(d, meta), expected, rtol=1e-6)


def test_score_counts_an_image_repeated_by_sampler_padding_once():
    """Catches records of a padded (repeated) image counted twice, doubling its positives."""
    task = DetectionTask(num_classes=1, coco_metrics=False)
    gt_a = gt([[0, 0, 10, 10]], [0])
    gt_b = gt([[0, 0, 10, 10]], [0])
    found, missed = dets([[0, 0, 10, 10, 0.9, 0]]), dets([])
    rank0 = [("a", found, gt_a), ("b", missed, gt_b)]
    rank1 = [("b", missed, gt_b)]  # the DistributedSampler's padding repeats image b
    # 2 positives, 1 found: AP = 1/2 (counted twice, b would make it 1/3)
    assert task.score([rank0, rank1]) == {"map50": 0.5, "map75": 0.5}


def test_map_without_any_ground_truth_or_detection_is_zero_not_an_error():
    """An eval shard with no boxes at all (or no detections) scores 0 at every threshold, both metrics."""
    from experiments.tasks.detection.voc_map import coco_map, voc_map

    empty_gt = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "difficult": np.zeros(0, bool)}
    some_det = np.asarray([[0, 0, 10, 10, 0.9, 0]], dtype=np.float64)
    for metric in (coco_map, voc_map):
        assert metric([some_det], [empty_gt], 20) == {0.5: 0.0, 0.75: 0.0}
    one_gt = {
        "boxes": np.asarray([[0.0, 0, 10, 10]]),
        "labels": np.zeros(1, np.int64),
        "difficult": np.zeros(1, bool),
    }
    no_det = np.zeros((0, 6))
    for metric in (coco_map, voc_map):
        assert metric([no_det], [one_gt], 20) == {0.5: 0.0, 0.75: 0.0}


def test_ota_with_no_targets_matches_nothing():
    """A batch without boxes: no candidate, so every level's match list is empty (not one stray match)."""
    from experiments.tasks.detection.assign import ota_assign
    from models.yolov7_tiny import DEFAULT_ANCHORS

    anchors = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
    grids, strides = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)
    targets = torch.zeros(0, 6)
    candidates = ratio_assign(targets, anchors, strides, grids)
    preds = [torch.zeros(1, 3, ny, nx, 8) for ny, nx in grids]
    out = ota_assign(preds, targets, anchors, strides, candidates, 3)
    assert [len(m.target) for m in out] == [0, 0, 0] and [len(m.image) for m in out] == [0, 0, 0]
