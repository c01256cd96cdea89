"""VOC data: the fixture through torchvision's reader, annotation parsing, letterbox and augmentation geometry."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.datasets import VOCDetection

from data import DatasetNotFoundError, build_datasets
from data.fixtures import write_fixture
from data.voc import VOC_CLASSES, parse_annotation
from data.voc.augment import PAD_VALUE, AugmentConfig, hsv_jitter, keep_boxes, letterbox


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_fixture("voc", tmp_path_factory.mktemp("voc"))


def test_fixture_is_read_by_torchvision(voc_root):
    sizes = {("2007", "trainval"): 8, ("2007", "test"): 4, ("2012", "trainval"): 4}
    for (year, image_set), n in sizes.items():
        ds = VOCDetection(str(voc_root), year=year, image_set=image_set)
        assert len(ds) == n
        img, ann = ds[0]
        assert img.mode == "RGB" and img.size == (int(ann["annotation"]["size"]["width"]), img.height)
        assert ann["annotation"]["folder"] == f"VOC{year}"


def test_class_order_is_the_standard_one():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[:5] == ("aeroplane", "bicycle", "bird", "boat", "bottle")
    assert VOC_CLASSES[14] == "person" and VOC_CLASSES[19] == "tvmonitor"
    assert list(VOC_CLASSES[10:12]) == ["diningtable", "dog"]


def test_parse_difficult_missing_and_boxes(voc_root):
    ds = VOCDetection(str(voc_root), year="2007", image_set="trainval")
    seen = {"difficult": 0, "missing": 0, "plain": 0}
    for index in range(len(ds)):
        _, ann = ds[index]
        gt = parse_annotation(ann)
        xml = Path(ds.annotations[index]).read_text()
        objects = xml.split("<object>")[1:]
        assert len(objects) == len(gt["labels"]) == len(gt["boxes"]) == len(gt["difficult"])
        for text, box, label, difficult in zip(objects, gt["boxes"], gt["labels"], gt["difficult"]):
            name = text.split("<name>")[1].split("</name>")[0]
            assert VOC_CLASSES[label] == name
            xmin = float(text.split("<xmin>")[1].split("<")[0])
            xmax = float(text.split("<xmax>")[1].split("<")[0])
            assert box[0] == xmin - 1 and box[2] == xmax  # 1-based inclusive -> continuous
            if "<difficult>" not in text:
                assert not difficult
                seen["missing"] += 1
            elif "<difficult>1</difficult>" in text:
                assert difficult
                seen["difficult"] += 1
            else:
                assert not difficult
                seen["plain"] += 1
    assert all(v > 0 for v in seen.values()), seen


def test_parse_single_object_and_unknown_class():
    ann = {
        "annotation": {
            "folder": "VOC2007",
            "filename": "x.jpg",
            "size": {"width": "10", "height": "8", "depth": "3"},
            "object": [{"name": "dog", "bndbox": {"xmin": "1", "ymin": "2", "xmax": "5", "ymax": "6"}}],
        }
    }
    gt = parse_annotation(ann)
    assert gt["labels"].tolist() == [11] and gt["difficult"].tolist() == [False]
    assert gt["boxes"].tolist() == [[0.0, 1.0, 5.0, 6.0]] and gt["orig_size"] == (8, 10)
    ann["annotation"]["object"][0]["name"] = "unicorn"
    with pytest.raises(ValueError, match="unicorn"):
        parse_annotation(ann)


def test_build_splits_and_items(voc_root):
    bundle = build_datasets("voc", root=str(voc_root), img_size=160, augment=False)
    assert len(bundle.train) == 8 + 4 and len(bundle.eval) == 4 and bundle.num_classes == 20
    assert bundle.info["class_names"] == list(VOC_CLASSES)
    image, (targets, meta) = bundle.eval[0]
    assert image.shape == (3, 160, 160) and image.dtype == torch.uint8
    assert targets.shape[1] == 5 and meta["difficult"].dtype == bool
    assert set(meta) >= {"orig_size", "scale", "pad", "boxes", "labels", "difficult", "image_id"}
    # eval targets keep difficult boxes; training targets drop them by default
    train_counts = [len(bundle.train[i][1][0]) for i in range(len(bundle.train))]
    train_gt = [bundle.train[i][1][1] for i in range(len(bundle.train))]
    assert train_counts == [int((~m["difficult"]).sum()) for m in train_gt]


def test_missing_data_names_path_and_way_out(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as err:
        build_datasets("voc", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert (
        str(tmp_path / "nowhere") in message and "dataset.download=true" in message and "VOC_ROOT" in message
    )
    monkeypatch.setenv("VOC_ROOT", str(tmp_path / "from_env"))
    with pytest.raises(DatasetNotFoundError, match="from_env"):
        build_datasets("voc", root=None)


def test_root_from_environment_and_vocdevkit_path(voc_root, monkeypatch):
    monkeypatch.setenv("VOC_ROOT", str(voc_root))
    assert len(build_datasets("voc", root=None, img_size=64).eval) == 4
    assert len(build_datasets("voc", root=str(voc_root / "VOCdevkit"), img_size=64).eval) == 4


def scene(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A grey-blue image with one red rectangle covering the continuous box ``box``."""
    img = Image.new("RGB", (w, h), (40, 60, 200))
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(250, 10, 10))
    return img


def red_extent(canvas: Image.Image) -> np.ndarray:
    a = np.asarray(canvas).astype(int)
    mask = (a[..., 0] > 180) & (a[..., 1] < 90) & (a[..., 2] < 90)
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def test_letterbox_keeps_aspect_and_pads_grey():
    img = scene(200, 100, (20, 10, 80, 60))
    canvas, boxes, keep, geometry = letterbox(img, np.array([[20, 10, 80, 60]], np.float32), 160)
    assert canvas.size == (160, 160) and keep.all()
    assert geometry["scale"] == pytest.approx(0.8) and geometry["pad"] == (0.0, 40.0)
    a = np.asarray(canvas)
    assert (a[:40] == PAD_VALUE).all() and (a[120:] == PAD_VALUE).all()
    np.testing.assert_allclose(boxes[0], [16, 48, 64, 88], atol=1e-4)
    np.testing.assert_allclose(red_extent(canvas), boxes[0], atol=1.5)


@pytest.mark.parametrize("seed", range(6))
def test_augmented_boxes_follow_the_drawn_shape(seed):
    cfg = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.05)
    img = scene(150, 120, (50, 40, 100, 90))
    gen = torch.Generator().manual_seed(seed)
    canvas, boxes, keep, geometry = letterbox(img, np.array([[50, 40, 100, 90]], np.float32), 128, cfg, gen)
    assert keep.all()
    np.testing.assert_allclose(red_extent(canvas), boxes[0], atol=2.0)


def test_flip_mirrors_the_box():
    img = scene(160, 160, (10, 30, 50, 70))
    box = np.array([[10, 30, 50, 70]], np.float32)
    no_flip = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)
    flip = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=1.0)
    c0, b0, _, g0 = letterbox(img, box, 160, no_flip, torch.Generator().manual_seed(3))
    c1, b1, _, g1 = letterbox(img, box, 160, flip, torch.Generator().manual_seed(3))
    assert not g0["flip"] and g1["flip"]
    np.testing.assert_allclose(b1[0], [160 - b0[0, 2], b0[0, 1], 160 - b0[0, 0], b0[0, 3]], atol=1e-4)
    assert b1[0, 0] > 80 > b0[0, 2]  # the box moved from the left half to the right half
    np.testing.assert_allclose(red_extent(c1), b1[0], atol=2.0)


def test_boxes_dropped_when_tiny_or_mostly_outside():
    cfg = AugmentConfig()
    moved = np.array(
        [
            [10, 10, 50, 50],  # inside: kept
            [-37, 10, 3, 50],  # 3 of 40 px left (92.5% of the area lost): dropped
            [-20, 10, 20, 50],  # half outside: kept, clipped
            [30, 30, 31.5, 60],  # 1.5 px wide: dropped
        ],
        np.float32,
    )
    clipped, keep = keep_boxes(moved, 64, cfg)
    assert keep.tolist() == [True, False, True, False]
    np.testing.assert_allclose(clipped[2], [0, 10, 20, 50])


def test_box_candidates_boundaries_as_yolov7():
    """YOLOv7's box_candidates: w, h > 2 px, area ratio > 0.1, aspect max(w/h, h/w) < 20, all strict."""
    cfg = AugmentConfig()
    moved = np.array(
        [
            [0, 0, 2, 30],  # exactly 2 px wide: dropped (w > 2 is strict)
            [0, 0, 2.5, 30],  # 2.5 px wide, aspect 12: kept
            [0, 10, 60, 12.9],  # 60 x 2.9 px, aspect 20.7: dropped by ar_thr alone
            [0, 10, 57, 12.9],  # 57 x 2.9 px, aspect 19.7: kept
            [-50, 0, 10, 3.01],  # clipped to 10 x 3.01 of 60 x 3.01: aspect 3.3, area ratio 0.167: kept
            [-20, 0, 3, 60],  # clipped to 3 x 60 of 23 x 60 (ratio 0.13 > 0.1), aspect exactly 20: dropped
        ],
        np.float32,
    )
    _, keep = keep_boxes(moved, 64, cfg)
    assert keep.tolist() == [False, True, False, True, True, False]
    _, loose = keep_boxes(moved, 64, AugmentConfig(max_aspect=np.inf))
    assert loose.tolist() == [False, True, True, True, True, True]  # only ar_thr removed rows 2 and 5


def test_hsv_jitter_changes_colour_not_geometry():
    img = scene(64, 48, (10, 10, 30, 30))
    out = hsv_jitter(img, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.size == img.size and out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - np.asarray(img).astype(int)).mean() > 1.0
    same = hsv_jitter(img, AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0), torch.Generator().manual_seed(0))
    assert np.abs(np.asarray(same).astype(int) - np.asarray(img).astype(int)).max() <= 3  # HSV round trip


def test_train_items_are_augmented_and_valid(voc_root):
    bundle = build_datasets("voc", root=str(voc_root), img_size=128, augment=True)
    torch.manual_seed(0)
    flips = set()
    for i in range(len(bundle.train)):
        image, (targets, meta) = bundle.train[i]
        assert image.shape == (3, 128, 128)
        flips.add(meta["flip"])
        if len(targets):
            assert (targets[:, 3:] >= 2).all()
            x1y1 = targets[:, 1:3] - targets[:, 3:] / 2
            x2y2 = targets[:, 1:3] + targets[:, 3:] / 2
            assert (x1y1 >= -1e-4).all() and (x2y2 <= 128 + 1e-4).all()
    assert flips == {True, False}


def test_image_ids_come_from_the_path_not_the_xml(tmp_path):
    """Two annotations naming the same <folder>/<filename> stay two images (evaluation de-duplicates by id)."""
    import xml.etree.ElementTree as ET

    root = write_fixture("voc", tmp_path, n_trainval07=2, n_test07=3, n_trainval12=1)
    xml = root / "VOCdevkit" / "VOC2007" / "Annotations" / "000004.xml"  # the second test image
    tree = ET.parse(xml)
    tree.getroot().find("filename").text = "000003.jpg"
    tree.getroot().find("folder").text = "elsewhere"
    tree.write(xml)
    bundle = build_datasets("voc", root=str(root), img_size=64, augment=False)
    ids = [bundle.eval[i][1][1]["image_id"] for i in range(len(bundle.eval))]
    assert ids == ["VOC2007/000003", "VOC2007/000004", "VOC2007/000005"]
    assert bundle.train[2][1][1]["image_id"] == "VOC2012/2012_000001"
