"""YOLOv7 loss: gains, ratio and OTA assignment on hand-made targets, perfect-prediction losses, CPU backprop.

The fixed-shape YOLO loss (two host syncs) against the per-level implementation it replaced.

``OLD`` holds what the per-level loss (commit 57bbda4, before the rewrite) printed on these batches:
loss, the three gained parts and the gradient projected on a fixed random direction per level. The
dense assigners must also pick exactly the per-level assigners' positives, in the same order."""

import pytest
import torch

from experiments.tasks.detection.assign import (
    _OFFSETS,
    dense_candidates,
    dense_ota_assign,
    dense_ratio_assign,
    flatten_levels,
    ota_assign,
    ratio_assign,
)
from experiments.tasks.detection.loss import YoloLoss
from models.yolov7_tiny import DEFAULT_ANCHORS, YOLOv7Tiny
from tests.helpers import ROOT

# ---------------------------------------------------------------- from test_detection_loss.py: YOLOv7 loss: gains, ratio and OTA assignment on hand-made targets, perfect-predi


ANCHORS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
STRIDES = (8, 16, 32)
GRIDS = [(40, 40), (20, 20), (10, 10)]  # 320 x 320 input


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def encode(box: torch.Tensor, gx: int, gy: int, anchor: torch.Tensor, stride: int) -> torch.Tensor:
    """Raw (tx, ty, tw, th) that decode to ``box`` (cx, cy, w, h pixels) at cell (gx, gy) with ``anchor``
    (to the nearest box the cell can express, for boxes out of its reach)."""
    sxy = (box[:2] / stride - torch.tensor([gx, gy], dtype=box.dtype) + 0.5) / 2
    swh = torch.sqrt(box[2:4] / anchor) / 2
    return logit(torch.cat([sxy, swh]).clamp(1e-6, 1 - 1e-6))


def background(batch: int, nc: int) -> list[torch.Tensor]:
    """Raw outputs that predict nothing: low objectness and classes, boxes shrunk to nothing."""
    return [torch.full((batch, 3, ny, nx, 5 + nc), -12.0) for ny, nx in GRIDS]


def cells(matches, level):
    m = matches[level]
    return sorted(zip(m.anchor.tolist(), m.gx.tolist(), m.gy.tolist(), m.target.tolist()))


def test_default_gains_follow_yolov7_scaling():
    loss = YoloLoss(ANCHORS, STRIDES, 20, img_size=320)
    assert (loss.box_gain, loss.cls_gain, loss.obj_gain) == pytest.approx((0.05, 0.125, 0.25))
    coco = YoloLoss(ANCHORS, STRIDES, 80, img_size=640)
    assert (coco.box_gain, coco.cls_gain, coco.obj_gain) == pytest.approx((0.05, 0.5, 1.0))
    with pytest.raises(ValueError, match="assigner"):
        YoloLoss(ANCHORS, STRIDES, 20, assigner="simota")


def test_ratio_assignment_anchors_and_neighbour_cells():
    # 12 x 16 box at (98, 102): P3 grid (12.25, 12.75) -> own cell, left neighbour (x frac < 0.5)
    # and lower neighbour (y frac > 0.5). All P3 anchors are within 4x; at P4 only (30, 61)
    # (30 / 12 = 2.5, 61 / 16 = 3.8); at P5 none (116 / 12 > 4).
    targets = torch.tensor([[0.0, 1, 98, 102, 12, 16]])
    m = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    assert cells(m, 0) == sorted(
        (a, gx, gy, 0) for a in range(3) for gx, gy in [(12, 12), (11, 12), (12, 13)]
    )
    # P4 grid (6.125, 6.375): own cell, left and upper neighbours
    assert cells(m, 1) == [(0, 5, 6, 0), (0, 6, 5, 0), (0, 6, 6, 0)]
    assert len(m[2]) == 0


def test_ratio_assignment_right_half_and_image_border():
    targets = torch.tensor([[1.0, 0, 102, 100, 20, 20], [0.0, 0, 3, 3, 10, 13]])
    m = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    first = [c for c in cells(m, 0) if c[3] == 0 and c[0] == 0]
    # (12.75, 12.5): right neighbour; y frac is exactly 0.5, so no vertical neighbour
    assert first == [(0, 12, 12, 0), (0, 13, 12, 0)]
    assert set(m[0].image[m[0].target == 0].tolist()) == {1}
    # a box in the top-left cell has no neighbour outside the image: its own cell only
    second = [c for c in cells(m, 0) if c[3] == 1]
    assert {(gx, gy) for _, gx, gy, _ in second} == {(0, 0)}


def perfect_preds(
    targets: torch.Tensor, matches, nc: int, batch: int, shift: float = 0.0
) -> list[torch.Tensor]:
    """Raw outputs that decode to each target (shifted right by ``shift`` px) at every matched location."""
    preds = background(batch, nc)
    for level, m in enumerate(matches):
        for b, a, gy, gx, t in zip(m.image, m.anchor, m.gy, m.gx, m.target):
            box = targets[t, 2:6] + torch.tensor([shift, 0, 0, 0])
            preds[level][b, a, gy, gx, :4] = encode(box, int(gx), int(gy), ANCHORS[level, a], STRIDES[level])
            preds[level][b, a, gy, gx, 4] = 12.0
            preds[level][b, a, gy, gx, 5 + int(targets[t, 1])] = 12.0
    return preds


@pytest.mark.parametrize("assigner", ["ratio", "ota"])
def test_perfect_predictions_give_near_zero_loss(assigner):
    targets = torch.tensor(
        [[0.0, 2, 60, 70, 30, 40], [0.0, 0, 230, 200, 120, 90], [1.0, 1, 150, 160, 200, 260]]
    )
    loss_fn = YoloLoss(ANCHORS, STRIDES, 3, assigner=assigner)
    matches = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    # With OTA only some candidates are positives: predict objects exactly there and nowhere else.
    matches = loss_fn.assign(perfect_preds(targets, matches, 3, 2), targets)
    assert sum(len(m) for m in matches) >= 3
    loss, parts = loss_fn(perfect_preds(targets, matches, 3, 2), targets)
    assert parts["box"].item() < 1e-4
    assert parts["cls"].item() < 1e-4
    assert parts["obj"].item() < 1e-3
    assert loss.item() == pytest.approx(2 * sum(v.item() for v in parts.values()), rel=1e-5)
    _, shifted = loss_fn(perfect_preds(targets, matches, 3, 2, shift=6.0), targets)
    assert shifted["box"].item() > 100 * max(parts["box"].item(), 1e-6)
    assert shifted["box"].item() > 0.002


def test_ota_keeps_dynamic_k_cheapest_candidates():
    targets = torch.tensor([[0.0, 1, 98, 102, 12, 16]])
    candidates = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)  # 9 at P3, 3 at P4
    preds = background(1, 3)
    exact = [(0, 0, 12, 12), (0, 1, 11, 12), (1, 0, 6, 6)]  # (level, anchor, gx, gy)
    for level, a, gx, gy in exact:
        preds[level][0, a, gy, gx, :4] = encode(targets[0, 2:6], gx, gy, ANCHORS[level, a], STRIDES[level])
    # One more candidate at IoU ~0.6: it adds 0.6 to the top-10 IoU sum (k = int(3.6) = 3), not a 4th pick.
    near = targets[0, 2:6] * torch.tensor([1, 1, 1.3, 1.3])
    preds[0][0, 2, 13, 12, :4] = encode(near, 12, 13, ANCHORS[0, 2], 8)
    out = ota_assign(preds, targets, ANCHORS, STRIDES, candidates, 3)
    picked = {
        (lv, a, gx, gy)
        for lv, m in enumerate(out)
        for a, gx, gy in zip(m.anchor.tolist(), m.gx.tolist(), m.gy.tolist())
    }
    assert picked == set(exact)
    pool = {
        (lv, a, gx, gy)
        for lv, m in enumerate(candidates)
        for a, gx, gy in zip(m.anchor.tolist(), m.gx.tolist(), m.gy.tolist())
    }
    assert picked <= pool
    assert all((m.target == 0).all() for m in out)


@pytest.mark.parametrize("winner", [0, 1])
def test_ota_conflict_goes_to_the_cheaper_target(winner):
    # Two targets sharing centre and anchors: their candidates coincide. The one prediction that
    # looks like anything decodes exactly to target ``winner``; both targets want it (k = 1 each).
    targets = torch.tensor([[0.0, 0, 98, 102, 12, 16], [0.0, 1, 98, 102, 14, 18]])
    candidates = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    preds = background(1, 2)
    preds[0][0, 0, 12, 12, :4] = encode(targets[winner, 2:6], 12, 12, ANCHORS[0, 0], 8)
    preds[0][0, 0, 12, 12, 5:] = 0.0  # equal class scores: the IoU term decides
    out = ota_assign(preds, targets, ANCHORS, STRIDES, candidates, 2)
    assert [len(m) for m in out] == [1, 0, 0]
    assert out[0].target.tolist() == [winner]
    assert (out[0].anchor.item(), out[0].gx.item(), out[0].gy.item()) == (0, 12, 12)


def test_ota_never_matches_across_images():
    targets = torch.tensor([[0.0, 0, 98, 102, 12, 16], [1.0, 0, 98, 102, 12, 16]])
    candidates = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    preds = background(2, 2)
    preds[0][1, 0, 12, 12, :4] = encode(targets[1, 2:6], 12, 12, ANCHORS[0, 0], 8)
    out = ota_assign(preds, targets, ANCHORS, STRIDES, candidates, 2)
    for m in out:
        assert torch.equal(m.image, targets[m.target, 0].long())
    assert {0, 1} <= set(torch.cat([m.target for m in out]).tolist())  # each target keeps >= 1


@pytest.mark.parametrize("assigner", ["ota", "ratio"])
def test_loss_backpropagates_through_the_model_on_cpu(assigner):
    torch.manual_seed(0)
    model = YOLOv7Tiny(num_classes=4)
    targets = torch.tensor([[0.0, 1, 60, 64, 40, 50], [1.0, 3, 100, 90, 120, 80], [1.0, 0, 20, 30, 10, 12]])
    loss_fn = YoloLoss(model.anchors, model.strides, 4, img_size=128, assigner=assigner)
    loss, parts = loss_fn(model(torch.rand(2, 3, 128, 128)), targets)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(parts) == {"box", "obj", "cls"}
    assert all(v.item() > 0 for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.detect.convs[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0][0].weight.grad.abs().sum() > 0


def test_no_targets_and_bfloat16_predictions():
    loss_fn = YoloLoss(ANCHORS, STRIDES, 3)
    preds = [p.requires_grad_() for p in background(2, 3)]
    loss, parts = loss_fn(preds, torch.zeros(0, 6))
    assert loss.item() > 0 and parts["box"].item() == 0 and parts["cls"].item() == 0
    loss.backward()
    assert preds[0].grad is not None
    targets = torch.tensor([[0.0, 1, 98, 102, 12, 16]])
    loss16, _ = loss_fn([p.detach().bfloat16() for p in preds], targets)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)


def test_bad_targets_are_named():
    loss_fn = YoloLoss(ANCHORS, STRIDES, 3)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        loss_fn(background(1, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="classes"):
        loss_fn(background(1, 3), torch.tensor([[0.0, 3, 50, 50, 10, 10]]))
    with pytest.raises(ValueError, match="num_classes=3"):
        loss_fn(background(1, 4), torch.zeros(0, 6))


def test_detection_code_has_no_cuda_references():
    paths = [*(ROOT / "experiments" / "tasks" / "detection").glob("*.py"), ROOT / "models" / "yolov7_tiny.py"]
    assert len(paths) >= 6
    for path in paths:
        assert "cuda" not in path.read_text(), path


def reference_ota(preds, targets, candidates, nc):
    """YOLOv7's per-image loop (one candidate per prediction), written plainly, for comparison."""
    from experiments.tasks.detection.assign import decode_at
    from experiments.tasks.detection.boxes import box_iou, xywh_to_xyxy

    result, conflicts = set(), 0
    for b in targets[:, 0].unique().long().tolist():
        tidx = (targets[:, 0] == b).nonzero().flatten().tolist()
        pool = sorted(
            {(lv, a, gy, gx) for lv, m in enumerate(candidates)
             for i, a, gy, gx in zip(m.image.tolist(), m.anchor.tolist(), m.gy.tolist(), m.gx.tolist()) if i == b}
        )  # fmt: skip
        if not pool:
            continue
        rows = []
        for lv, a, gy, gx in pool:
            raw = preds[lv][b, a, gy, gx][None]
            box = decode_at(raw, torch.tensor([gy]), torch.tensor([gx]), ANCHORS[lv, a][None], STRIDES[lv])
            p = torch.sqrt(raw[0, 5:].sigmoid() * raw[0, 4].sigmoid())
            rows.append((box[0], p))
        boxes = torch.stack([r[0] for r in rows])
        cost = torch.zeros(len(tidx), len(pool))
        iou = box_iou(xywh_to_xyxy(targets[tidx, 2:6]), xywh_to_xyxy(boxes))
        probs = torch.stack([r[1] for r in rows]).clamp(1e-7, 1 - 1e-7)
        for ti, t in enumerate(tidx):
            onehot = torch.nn.functional.one_hot(targets[t, 1].long(), nc).float().expand_as(probs)
            bce = torch.nn.functional.binary_cross_entropy(probs, onehot, reduction="none").sum(1)
            cost[ti] = bce + 3 * -torch.log(iou[ti] + 1e-8)
        matching = torch.zeros_like(cost, dtype=torch.bool)
        for ti in range(len(tidx)):
            k = max(1, int(iou[ti].topk(min(10, len(pool))).values.sum()))
            matching[ti, cost[ti].topk(k, largest=False).indices] = True
        for ci in range(len(pool)):
            owners = matching[:, ci].nonzero().flatten()
            if len(owners) == 0:
                continue
            conflicts += len(owners) > 1
            owner = cost[:, ci].argmin() if len(owners) > 1 else owners[0]
            result.add((*pool[ci], tidx[int(owner)]))
    return result, conflicts


def test_ota_matches_a_plain_per_image_loop_on_random_predictions():
    g = torch.Generator().manual_seed(3)
    n = 24  # crowded (centres within 100 px) so that some predictions are claimed twice
    wh = torch.rand(n, 2, generator=g) * 150 + 8
    xy = torch.rand(n, 2, generator=g) * 100 + 110
    targets = torch.cat(
        [torch.randint(0, 3, (n, 1), generator=g), torch.randint(0, 4, (n, 1), generator=g), xy, wh], 1
    )
    targets = targets.float()
    preds = [torch.randn(3, 3, ny, nx, 9, generator=g) for ny, nx in GRIDS]
    candidates = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    out = ota_assign(preds, targets, ANCHORS, STRIDES, candidates, 4)
    got = {
        (lv, a, gy, gx, t)
        for lv, m in enumerate(out)
        for a, gy, gx, t in zip(m.anchor.tolist(), m.gy.tolist(), m.gx.tolist(), m.target.tolist())
    }
    expected, conflicts = reference_ota(preds, targets, candidates, 4)
    assert len(expected) >= n and conflicts >= 1
    assert got == expected


# ---------------------------------------------------------------- from test_detection_sync_free.py: The fixed-shape YOLO loss (two host syncs) against the per-level implementation


ANCHORS_SYNC = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
STRIDES_SYNC = (8, 16, 32)
GRIDS_SYNC = [(40, 40), (20, 20), (10, 10)]

# (seed, assigner): (loss, {part: value}, gradient . probe per level), from the per-level implementation.
OLD = {
    (0, "ota"): (5.139400482177734, (0.12425980716943741, 1.2428340911865234, 0.34603965282440186),
                 (0.02361946332386698, 0.0724966188835813, 0.03129848015262554)),
    (0, "ratio"): (5.214419364929199, (0.14368297159671783, 1.2424626350402832, 0.351994127035141),
                   (0.006254336324555854, 0.0005200924033281554, -0.006354394240489688)),
    (1, "ota"): (5.0474443435668945, (0.11274521797895432, 1.2433773279190063, 0.32635900378227234),
                 (0.03650439109675811, -0.0013103822725097566, -0.0034469118418357344)),
    (1, "ratio"): (5.186415672302246, (0.13224129378795624, 1.2425289154052734, 0.35403501987457275),
                   (0.01744507824012692, 0.0005825679757615748, -0.019042480439579137)),
}  # fmt: skip


def case(seed: int):
    """3 images, 14 targets of 20 classes (two sharing predictions, one at the border), random raw outputs."""
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(3, 3, ny, nx, 25, generator=g) * 1.5 for ny, nx in GRIDS_SYNC]
    img = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2], dtype=torch.float32)
    cls = torch.randint(0, 20, (14,), generator=g).float()
    xy = torch.rand(14, 2, generator=g) * 300 + 10
    wh = torch.rand(14, 2, generator=g) ** 2 * 200 + 6
    xy[3] = xy[2] + 1.0
    wh[3] = wh[2]
    xy[13] = torch.tensor([317.0, 2.0])
    targets = torch.cat([img[:, None], cls[:, None], xy, wh], 1)
    probes = [torch.randn(p.shape, generator=g) for p in preds]
    return preds, targets, probes


@pytest.mark.parametrize("key", sorted(OLD))
def test_loss_equals_the_per_level_implementation(key, one_thread):
    seed, assigner = key
    preds, targets, probes = case(seed)
    preds = [p.requires_grad_() for p in preds]
    loss, parts = YoloLoss(ANCHORS_SYNC, STRIDES_SYNC, 20, img_size=320, assigner=assigner)(preds, targets)
    loss.backward()
    old_loss, old_parts, old_probe = OLD[key]
    assert loss.item() == pytest.approx(old_loss, rel=1e-6)
    assert [parts[k].item() for k in ("box", "obj", "cls")] == pytest.approx(old_parts, rel=1e-6)
    probe = [float((p.grad.double() * q.double()).sum()) for p, q in zip(preds, probes)]
    assert probe == pytest.approx(old_probe, rel=1e-5, abs=1e-9)


def as_rows(matches):
    return [
        list(zip(m.image.tolist(), m.anchor.tolist(), m.gy.tolist(), m.gx.tolist(), m.target.tolist()))
        for m in matches
    ]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dense_assigners_pick_the_per_level_positives_in_order(seed, one_thread):
    preds, targets, _ = case(seed)
    if seed >= 2:  # crowded: 40 boxes in 2 images, many predictions claimed by several targets
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(40, 2, generator=g) * 120 + 100
        wh = torch.rand(40, 2, generator=g) * 60 + 8
        img = (torch.arange(40) % 2).float()
        targets = torch.cat([img[:, None], torch.randint(0, 20, (40, 1), generator=g).float(), xy, wh], 1)
    shapes = [p.shape for p in preds]
    candidates = dense_candidates(targets, ANCHORS_SYNC, STRIDES_SYNC, shapes, torch.tensor(_OFFSETS))
    reference = ratio_assign(targets, ANCHORS_SYNC, STRIDES_SYNC, GRIDS_SYNC)
    assert as_rows(dense_ratio_assign(candidates).per_level(shapes)) == as_rows(reference)
    ota = ota_assign(preds, targets, ANCHORS_SYNC, STRIDES_SYNC, reference, 20)
    dense = dense_ota_assign(flatten_levels(preds), targets, candidates, 20).per_level(shapes)
    assert sum(len(m) for m in ota) >= 10
    assert as_rows(dense) == as_rows(ota)


def test_class_loss_is_counted_from_two_classes_and_skipped_for_one():
    """YOLOv7 skips the class term only for a single class: with two, a positive whose class logits
    say 'no' costs class loss; with one, the class term is exactly 0."""
    targets = torch.tensor([[0.0, 1, 60, 70, 30, 40]])
    two = YoloLoss(ANCHORS, STRIDES, 2, assigner="ratio")
    _, parts = two(background(1, 2), targets)
    assert parts["cls"].item() > 0.1
    one = YoloLoss(ANCHORS, STRIDES, 1, assigner="ratio")
    _, parts = one(background(1, 1), targets[:, [0, 1, 2, 3, 4, 5]] * torch.tensor([1, 0, 1, 1, 1, 1]))
    assert parts["cls"].item() == 0.0


def test_levels_are_the_anchors_first_dimension_not_anchors_per_level():
    """Two levels of three anchors each (not square, unlike YOLOv7-tiny's 3 x 3): the loss takes
    two strides and two balance weights, and a third stride is refused by name."""
    anchors, strides, grids = ANCHORS[:2], STRIDES[:2], GRIDS[:2]
    loss_fn = YoloLoss(anchors, strides, 2, balance=(4.0, 1.0), assigner="ratio")
    preds = [torch.full((1, 3, ny, nx, 7), -12.0) for ny, nx in grids]
    loss, _ = loss_fn(preds, torch.tensor([[0.0, 1, 60, 70, 30, 40]]))
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ValueError, match="anchors have 2 levels"):
        YoloLoss(anchors, STRIDES, 2, balance=(4.0, 1.0, 0.4))
