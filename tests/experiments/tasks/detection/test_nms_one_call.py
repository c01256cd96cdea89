"""NMS per class in one call per image (class offsets, YOLOv7's way): the same boxes as one NMS per class,
with many candidates and classes, and no loop over classes (torchvision's batched_nms loops above 1,000
boxes on the CPU and 25,000 on CUDA, about 40 host syncs per image)."""

import pytest
import torch
import torchvision

from experiments.tasks.detection import postprocess
from experiments.tasks.detection.postprocess import class_nms, nms


def per_class_reference(boxes, scores, classes, iou):
    """One torchvision NMS per class in float32, merged best score first (the definition)."""
    keep = []
    for c in classes.unique():
        idx = (classes == c).nonzero().flatten()
        keep.append(idx[torchvision.ops.nms(boxes[idx], scores[idx], iou)])
    keep = torch.cat(keep)
    return keep[scores[keep].sort(descending=True, stable=True).indices]


def random_boxes(n, classes, seed, size=320.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size - 20  # some boxes start left of / above the image
    wh = torch.rand(n, 2, generator=g) * 60 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_offsets_give_the_per_class_result_on_many_boxes(seed):
    boxes, scores, classes = random_boxes(6000, 20, seed)
    got = class_nms(boxes, scores, classes, 0.65)
    want = per_class_reference(boxes, scores, classes, 0.65)
    assert len(want) > 1000  # enough survivors to mean something
    # the same boxes in the same score order (boxes with exactly equal scores may come in either order,
    # as they do between torchvision's own two batched_nms paths)
    assert sorted(got.tolist()) == sorted(want.tolist())
    assert torch.equal(scores[got], scores[want])


@pytest.mark.slow
def test_one_nms_call_per_image_whatever_the_number_of_boxes_and_classes(monkeypatch):
    calls = []
    real = postprocess.torchvision_nms

    def spy(boxes, scores, iou):
        calls.append(len(boxes))
        return real(boxes, scores, iou)

    monkeypatch.setattr(postprocess, "torchvision_nms", spy)
    monkeypatch.setattr(torchvision.ops.boxes, "nms", spy)  # batched_nms's own calls, were it used
    g = torch.Generator().manual_seed(0)
    decoded = torch.rand(2, 3000, 5 + 20, generator=g)  # objectness and class scores all > conf_thres
    decoded[..., :2] *= 320
    decoded[..., 2:4] = decoded[..., 2:4] * 40 + 4
    out = nms(decoded, conf_thres=0.001, iou_thres=0.65, multi_label=True, max_candidates=30000)
    assert len(calls) == 2 and min(calls) > 25_000  # one call per image, all candidates in it
    assert all(len(o) == 300 for o in out)
    assert all(bool((o[:-1, 4] >= o[1:, 4]).all()) for o in out)  # best score first


def test_candidates_are_capped_at_the_best_scores():
    boxes, scores, classes = random_boxes(5000, 3, 7)
    decoded = torch.cat(
        [
            (boxes[:, :2] + boxes[:, 2:]) / 2,
            boxes[:, 2:] - boxes[:, :2],
            torch.ones(5000, 1),
            torch.zeros(5000, 3),
        ],
        1,
    )
    decoded[torch.arange(5000), 5 + classes] = scores.clamp_min(0.01)
    capped = nms(decoded[None], max_candidates=100, max_det=1000)[0]
    top = scores.clamp_min(0.01).topk(100).values
    assert len(capped) <= 100 and float(capped[:, 4].min()) >= float(top.min())
