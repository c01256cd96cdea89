"""VOC all-point mAP and the pycocotools 101-point values on hand-made detections."""

import numpy as np
import pytest

from experiments.tasks.detection.voc_map import all_point_ap, coco_map, voc_ap_per_class, voc_map


def gt(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return {"boxes": boxes, "labels": np.asarray(labels, dtype=np.int64), "difficult": difficult}


def dets(rows):
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def test_all_point_ap_is_area_under_envelope():
    # recall 0.5 at precision 1, then recall 1.0 at precision 2/3: area = 0.5 * 1 + 0.5 * 2/3
    assert all_point_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)


def test_perfect_detections_give_one():
    gts = [gt([[0, 0, 10, 10], [20, 20, 50, 40]], [0, 3]), gt([[5, 5, 30, 30]], [7])]
    ds = [dets([[0, 0, 10, 10, 0.9, 0], [20, 20, 50, 40, 0.8, 3]]), dets([[5, 5, 30, 30, 0.7, 7]])]
    assert voc_map(ds, gts, 20) == {0.5: pytest.approx(1.0), 0.75: pytest.approx(1.0)}
    assert coco_map(ds, gts, 20) == {0.5: pytest.approx(1.0), 0.75: pytest.approx(1.0)}


def test_hand_worked_duplicates_difficult_and_miss():
    gts = [
        gt([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0], difficult=[False, True]),  # G1, G2 (difficult)
        gt([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]], [0, 0, 1]),  # G3, G4 (never found), class 1
    ]
    ds = [
        dets(
            [
                [0, 0, 10, 10, 0.9, 0],  # TP on G1
                [0, 0, 10, 10, 0.8, 0],  # duplicate of G1: FP
                [20, 0, 30, 10, 0.7, 0],  # on the difficult G2: ignored
                [60, 60, 70, 70, 0.3, 2],  # class 2 has no boxes at all: left out of the mean
            ]
        ),
        dets([[0, 0, 10, 10, 0.6, 0], [60, 60, 70, 70, 0.5, 0], [20, 20, 30, 30, 0.95, 1]]),  # TP G3, FP, TP
    ]
    # class 0: 3 positives (G1, G3, G4); counted sequence TP, FP, TP, FP
    # recall 1/3, 1/3, 2/3, 2/3 with precision 1, 1/2, 2/3, 1/2 -> envelope 1 up to 1/3, 2/3 up to 2/3
    ap0 = 1 / 3 * 1 + (2 / 3 - 1 / 3) * (2 / 3)  # = 5/9
    ap = voc_ap_per_class(ds, gts, 20, 0.5)
    assert ap[0] == pytest.approx(5 / 9) == pytest.approx(ap0)
    assert ap[1] == pytest.approx(1.0)
    assert np.isnan(ap[2]) and np.isnan(ap[5])
    assert voc_map(ds, gts, 20)[0.5] == pytest.approx((5 / 9 + 1) / 2)
    # COCO samples the same envelope at recall 0, 0.01, ..., 1: 34 points at 1, 33 at 2/3, 34 at 0
    assert coco_map(ds, gts, 20)[0.5] == pytest.approx((56 / 101 + 1) / 2)


def test_difficult_box_found_or_not_changes_nothing():
    base = [gt([[0, 0, 10, 10], [20, 0, 30, 10]], [4, 4], difficult=[False, True])]
    with_hit = [dets([[0, 0, 10, 10, 0.9, 4], [20, 0, 30, 10, 0.95, 4]])]
    without = [dets([[0, 0, 10, 10, 0.9, 4]])]
    assert voc_map(with_hit, base, 20)[0.5] == pytest.approx(1.0)
    assert voc_map(without, base, 20)[0.5] == pytest.approx(1.0)


def test_iou_06_counts_at_05_not_075():
    # shift by 25 px of a 100 px box: IoU = 75 * 100 / (2 * 100 * 100 - 75 * 100) = 0.6
    gts = [gt([[0, 0, 100, 100]], [2])]
    ds = [dets([[25, 0, 125, 100, 0.9, 2]])]
    result = voc_map(ds, gts, 20)
    assert result[0.5] == pytest.approx(1.0)
    assert result[0.75] == pytest.approx(0.0)
    coco = coco_map(ds, gts, 20)
    assert coco[0.5] == pytest.approx(1.0) and coco[0.75] == pytest.approx(0.0)


def test_wrong_class_is_a_false_positive():
    gts = [gt([[0, 0, 10, 10]], [0])]
    ds = [dets([[0, 0, 10, 10, 0.9, 1], [0, 0, 10, 10, 0.5, 0]])]
    assert voc_ap_per_class(ds, gts, 20)[0] == pytest.approx(1.0)  # class 1's box does not touch class 0
    assert voc_map(ds, gts, 20)[0.5] == pytest.approx(1.0)  # class 1 has no positives: left out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_all_point_and_coco_101_point_agree_where_protocols_coincide(seed):
    """Separated boxes, no duplicates, no difficult: both protocols match the same detections, so the
    APs differ only by integration: |all-point - 101-point| <= 1/100 per class (the 101-point mean of a
    non-increasing step function lies between its left and right Riemann sums, each within 1/100)."""
    rng = np.random.default_rng(seed)
    gts, ds = [], []
    for _ in range(12):
        cells = rng.permutation(16)[: rng.integers(2, 8)]
        boxes = np.stack([(cells % 4) * 50.0, (cells // 4) * 50.0], axis=1)
        boxes = np.concatenate([boxes + 5, boxes + 5 + rng.uniform(20, 35, size=(len(cells), 2))], axis=1)
        labels = rng.integers(0, 3, len(cells))
        gts.append(gt(boxes, labels))
        rows = []
        for box, label in zip(boxes, labels):
            if rng.random() < 0.8:
                jitter = box + rng.normal(0, 2.5, 4)
                rows.append([*jitter, rng.random(), label])
            if rng.random() < 0.3:  # a false positive in an empty region (x beyond the grid)
                x1 = 250 + rng.uniform(0, 50)
                rows.append([x1, box[1], x1 + 30, box[3], rng.random(), label])
        ds.append(dets(rows))
    voc, coco = voc_map(ds, gts, 3), coco_map(ds, gts, 3)
    for t in (0.5, 0.75):
        assert 0.05 < voc[t] < 1.0
        assert abs(voc[t] - coco[t]) <= 0.01, (t, voc[t], coco[t])


def test_many_images_is_fast():
    """4,952 images x 100 detections: matching must not loop in Python over detections."""
    import time

    rng = np.random.default_rng(0)
    n = 4952
    gts = [
        gt(
            rng.uniform(0, 200, (3, 2)).repeat(2, axis=1)[:, [0, 2, 1, 3]] + [0, 0, 50, 50],
            rng.integers(0, 20, 3),
        )
        for _ in range(n)
    ]
    ds = []
    for g in gts:
        boxes = np.repeat(g["boxes"], 34, axis=0)[:100] + rng.normal(0, 5, (100, 4))
        ds.append(np.column_stack([boxes, rng.random(100), rng.integers(0, 20, 100)]))
    start = time.perf_counter()
    result = voc_map(ds, gts, 20)
    elapsed = time.perf_counter() - start
    assert 0.0 < result[0.5] < 1.0
    assert elapsed < 10.0, elapsed


def reference_voc_ap(ds, gts, cls, thr):
    """The devkit's loop, written plainly: one detection at a time, in score order."""
    recs = [(s, i, d[:4]) for i, img in enumerate(ds) for d in img if d[5] == cls for s in [d[4]]]
    recs.sort(key=lambda r: -r[0])
    taken = [np.zeros(len(g["labels"]), bool) for g in gts]
    npos = sum(int(((g["labels"] == cls) & ~g["difficult"]).sum()) for g in gts)
    tp, fp = [], []
    for _, i, box in recs:
        g = gts[i]
        best, arg = -1.0, -1
        for j, (gb, gl) in enumerate(zip(g["boxes"], g["labels"])):
            if gl != cls:
                continue
            iw = max(0.0, min(box[2], gb[2]) - max(box[0], gb[0]))
            ih = max(0.0, min(box[3], gb[3]) - max(box[1], gb[1]))
            union = (box[2] - box[0]) * (box[3] - box[1]) + (gb[2] - gb[0]) * (gb[3] - gb[1]) - iw * ih
            if iw * ih / union > best:
                best, arg = iw * ih / union, j
        if best >= thr and g["difficult"][arg]:
            continue
        if best >= thr and not taken[i][arg]:
            taken[i][arg] = True
            tp.append(1), fp.append(0)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return all_point_ap(tp / npos, tp / np.maximum(tp + fp, 1)) if len(tp) else 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_matching_equals_the_devkit_loop(seed):
    """Overlapping boxes, duplicates and difficult boxes: the sort-and-first-occurrence matching gives
    exactly the one-at-a-time loop's APs."""
    rng = np.random.default_rng(seed)
    gts, ds = [], []
    for _ in range(30):
        m = int(rng.integers(1, 6))
        xy = rng.uniform(0, 60, (m, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (m, 2))], axis=1)
        gts.append(gt(boxes, rng.integers(0, 3, m), rng.random(m) < 0.25))
        n = int(rng.integers(0, 12))
        src = boxes[rng.integers(0, m, n)] + rng.normal(0, 4, (n, 4))
        scores = np.round(rng.random(n), 1)  # ties on purpose
        ds.append(np.column_stack([src, scores, rng.integers(0, 3, n)]))
    for thr in (0.5, 0.75):
        ap = voc_ap_per_class(ds, gts, 3, thr)
        for c in range(3):
            assert ap[c] == pytest.approx(reference_voc_ap(ds, gts, c, thr), abs=1e-12), (c, thr)
