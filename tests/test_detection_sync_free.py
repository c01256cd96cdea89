"""The fixed-shape YOLO loss (two host syncs) against the per-level implementation it replaced.

``OLD`` holds what the per-level loss (commit 57bbda4, before the rewrite) printed on these batches:
loss, the three gained parts and the gradient projected on a fixed random direction per level. The
dense assigners must also pick exactly the per-level assigners' positives, in the same order.
"""

import pytest
import torch

from experiments.detection.assign import (
    _OFFSETS,
    dense_candidates,
    dense_ota_assign,
    dense_ratio_assign,
    flatten_levels,
    ota_assign,
    ratio_assign,
)
from experiments.detection.loss import YoloLoss
from models.yolov7_tiny import DEFAULT_ANCHORS

ANCHORS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32)
STRIDES = (8, 16, 32)
GRIDS = [(40, 40), (20, 20), (10, 10)]

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
    preds = [torch.randn(3, 3, ny, nx, 25, generator=g) * 1.5 for ny, nx in GRIDS]
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
    loss, parts = YoloLoss(ANCHORS, STRIDES, 20, img_size=320, assigner=assigner)(preds, targets)
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
    candidates = dense_candidates(targets, ANCHORS, STRIDES, shapes, torch.tensor(_OFFSETS))
    reference = ratio_assign(targets, ANCHORS, STRIDES, GRIDS)
    assert as_rows(dense_ratio_assign(candidates).per_level(shapes)) == as_rows(reference)
    ota = ota_assign(preds, targets, ANCHORS, STRIDES, reference, 20)
    dense = dense_ota_assign(flatten_levels(preds), targets, candidates, 20).per_level(shapes)
    assert sum(len(m) for m in ota) >= 10
    assert as_rows(dense) == as_rows(ota)
