"""Target assignment on non-square grids (issue 26 item 9): a rectangular input gives levels with
ny != nx; ratio_assign and its dense form must agree with a brute-force reading of the rule."""

import math

import pytest
import torch

from experiments.tasks.detection.assign import (
    _OFFSETS,
    dense_candidates,
    dense_ratio_assign,
    ratio_assign,
)

STRIDES = (8, 16, 32)
ANCHORS = torch.tensor(
    [[[12.0, 16.0], [19.0, 36.0], [40.0, 28.0]], [[36.0, 75.0], [76.0, 55.0], [72.0, 146.0]],
     [[142.0, 110.0], [192.0, 243.0], [459.0, 401.0]]]
)  # fmt: skip


def brute_force(targets, height, width, anchor_t=4.0):
    """The rule, one (level, anchor, target, neighbour) at a time: an anchor fits when every width and
    height ratio is below anchor_t; the target's cell predicts it, and the left/upper neighbour when the
    centre is in the cell's first half and not in the first cell (gx > 1), the right/lower one when it is
    in the second half and not in the last cell (nx - gx > 1)."""
    out = set()
    for level, stride in enumerate(STRIDES):
        ny, nx = height // stride, width // stride
        for a, (aw, ah) in enumerate(ANCHORS[level].tolist()):
            for t, (image, _, cx, cy, w, h) in enumerate(targets.tolist()):
                rw, rh = w / aw, h / ah
                if max(rw, 1 / rw, rh, 1 / rh) >= anchor_t:
                    continue
                gx, gy = cx / stride, cy / stride
                cells = [(math.floor(gx), math.floor(gy))]
                if gx % 1 < 0.5 and gx > 1:
                    cells.append((math.floor(gx) - 1, math.floor(gy)))
                if gy % 1 < 0.5 and gy > 1:
                    cells.append((math.floor(gx), math.floor(gy) - 1))
                if (nx - gx) % 1 < 0.5 and nx - gx > 1:
                    cells.append((math.floor(gx) + 1, math.floor(gy)))
                if (ny - gy) % 1 < 0.5 and ny - gy > 1:
                    cells.append((math.floor(gx), math.floor(gy) + 1))
                for x, y in cells:
                    out.add((level, int(image), a, min(max(y, 0), ny - 1), min(max(x, 0), nx - 1), t))
    return out


def targets_on(height, width, n=60, seed=0):
    """Boxes all over a height x width input, centres up to the right and bottom edges."""
    g = torch.Generator().manual_seed(seed)
    cx = torch.rand(n, generator=g) * width
    cy = torch.rand(n, generator=g) * height
    edges = torch.tensor([[width - 3.0, 5.0], [5.0, height - 3.0], [width - 1.0, height - 1.0], [9.0, 9.0]])
    cx, cy = torch.cat([cx, edges[:, 0]]), torch.cat([cy, edges[:, 1]])
    wh = 8 + torch.rand(cx.numel(), 2, generator=g) * 150
    image = torch.randint(0, 2, (cx.numel(),), generator=g).float()
    cls = torch.randint(0, 20, (cx.numel(),), generator=g).float()
    return torch.stack([image, cls, cx, cy, wh[:, 0], wh[:, 1]], dim=1)


def as_set(matches):
    return {
        (level, *row)
        for level, m in enumerate(matches)
        for row in zip(m.image.tolist(), m.anchor.tolist(), m.gy.tolist(), m.gx.tolist(), m.target.tolist())
    }


@pytest.mark.parametrize(
    "height, width", [(128, 320), (320, 128), (96, 640)], ids=["wide", "tall", "very wide"]
)
def test_ratio_assign_on_a_rectangular_grid_matches_the_brute_force_rule(height, width):
    targets = targets_on(height, width)
    grid_sizes = [(height // s, width // s) for s in STRIDES]
    got = ratio_assign(targets, ANCHORS, STRIDES, grid_sizes)
    want = brute_force(targets, height, width)
    assert len(want) > 100
    assert as_set(got) == want
    assert sum(len(m) for m in got) == len(want)  # no duplicates beyond the rule's


@pytest.mark.parametrize("height, width", [(128, 320), (320, 128)], ids=["wide", "tall"])
def test_the_dense_assignment_on_a_rectangular_grid_matches_the_brute_force_rule(height, width):
    targets = targets_on(height, width, seed=1)
    shapes = [torch.Size([2, 3, height // s, width // s, 25]) for s in STRIDES]
    candidates = dense_candidates(targets, ANCHORS, STRIDES, shapes, torch.tensor(_OFFSETS))
    got = dense_ratio_assign(candidates).per_level(shapes)
    assert as_set(got) == brute_force(targets, height, width)
