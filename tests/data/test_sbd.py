"""SBD data: the fixture in SBD's real format read by torchvision, the joint transforms, the batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import SBDataset

from data import DatasetNotFoundError, build_datasets
from data.fixtures import write_fixture
from data.sbd.augment import EvalTransform, ResizeTransform, TrainTransform
from data.sbd.fixture import DEFAULT_CLASSES
from experiments.tasks.segmentation.task import SegmentationTask


@pytest.fixture(scope="module")
def sbd_root(tmp_path_factory):
    return write_fixture("sbd", tmp_path_factory.mktemp("sbd"), n_train=6, n_val=3)


def test_fixture_reads_through_torchvision_in_both_modes(sbd_root):
    train = SBDataset(str(sbd_root), image_set="train", mode="segmentation")
    val = SBDataset(str(sbd_root), image_set="val", mode="segmentation")
    assert (len(train), len(val)) == (6, 3)
    labels = set()
    for img, mask in list(train) + list(val):
        assert img.mode == "RGB" and mask.mode == "L" and img.size == mask.size
        labels |= set(np.unique(np.asarray(mask)).tolist())
    # like real SBD: background and the drawn classes only, no 255 border
    assert 0 in labels and 255 not in labels
    assert labels <= {0, *DEFAULT_CLASSES} and len(labels) >= 3
    img, edges = SBDataset(str(sbd_root), image_set="val", mode="boundaries")[0]
    seg = np.asarray(val[0][1])
    assert edges.shape == (20, *seg.shape)
    for c in range(20):  # each class's boundary lies on that class's pixels
        assert not (edges[c].astype(bool) & (seg != c + 1)).any()
    assert edges.sum() > 0


def test_build_gives_augmented_train_crops_and_original_eval_masks(sbd_root):
    bundle = build_datasets("sbd", root=sbd_root, img_size=48)
    assert bundle.num_classes == 21 and bundle.info["class_names"][0] == "background"
    assert bundle.info["class_names"][15] == "person"
    image, mask = bundle.train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 48)
    assert mask.dtype == torch.uint8 and mask.shape == (48, 48)
    raw = SBDataset(str(sbd_root), image_set="val", mode="segmentation")
    for i in range(len(raw)):
        image, mask = bundle.eval[i]
        assert image.shape == (3, 48, 48)
        assert torch.equal(mask, torch.from_numpy(np.array(raw[i][1])))  # untouched original mask


def test_missing_data_names_path_and_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv("SBD_ROOT", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        build_datasets("sbd", root=tmp_path / "nowhere")
    message = str(info.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    assert "SBD_ROOT" in message and "dataset.download=true" in message


def test_env_fallback_and_extracted_archive_layout(tmp_path, monkeypatch):
    nested = write_fixture("sbd", tmp_path / "benchmark_RELEASE" / "dataset", n_train=2, n_val=1)
    monkeypatch.setenv("SBD_ROOT", str(tmp_path))
    bundle = build_datasets("sbd", root=None, img_size=32)
    assert bundle.info["root"] == str(nested) and len(bundle.train) == 2


def test_bad_options_are_named(sbd_root):
    with pytest.raises(ValueError, match="colour"):
        build_datasets("sbd", root=sbd_root, colour=True)
    with pytest.raises(ValueError, match="scale"):
        build_datasets("sbd", root=sbd_root, scale=[2.0, 0.5])


def _coded_pair(w: int, h: int) -> tuple[Image.Image, Image.Image]:
    """An image whose red channel is 10 x the label, green the column, and its mask (labels 1..4)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 5, size=(h, w)).astype(np.uint8)
    rgb = np.stack(
        [labels * 10, np.tile(np.arange(w, dtype=np.uint8), (h, 1)), np.full((h, w), 7, np.uint8)], -1
    )
    return Image.fromarray(rgb), Image.fromarray(labels)


def test_train_crop_keeps_image_and_mask_aligned_and_pads_with_ignore():
    img, mask = _coded_pair(40, 30)
    tf = TrainTransform(size=48, scale=(1.0, 1.0), flip=0.0, generator=torch.Generator().manual_seed(0))
    image, target = tf(img, mask)
    assert image.shape == (3, 48, 48) and target.shape == (48, 48)
    pad = target == 255
    assert pad.sum() == 48 * 48 - 40 * 30  # the 40x30 image sits in a 48x48 canvas
    assert (image[:, pad] == 0).all()  # image padded with 0
    assert torch.equal(image[0][~pad], (target[~pad] * 10).to(torch.uint8))  # same pixels in both


def test_flip_mirrors_both_and_generator_makes_it_repeatable():
    img, mask = _coded_pair(32, 32)
    image, target = TrainTransform(size=32, scale=(1.0, 1.0), flip=1.0)(img, mask)
    assert torch.equal(target, torch.from_numpy(np.array(mask)[:, ::-1].copy()))
    assert torch.equal(image[1, 0], torch.arange(31, -1, -1, dtype=torch.uint8))
    assert torch.equal(image[0], target * 10)

    def run(seed: int):
        return TrainTransform(size=24, generator=torch.Generator().manual_seed(seed))(img, mask)

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_scaling_resizes_by_the_drawn_factor():
    img, mask = _coded_pair(40, 40)
    _, target = TrainTransform(size=100, scale=(2.0, 2.0), flip=0.0)(img, mask)  # 80x80 in a 100x100 crop
    assert (target != 255).sum() == 80 * 80
    _, small = TrainTransform(size=100, scale=(0.5, 0.5), flip=0.0)(img, mask)
    assert (small != 255).sum() == 20 * 20
    assert set(np.unique(small[small != 255].numpy())) <= {1, 2, 3, 4}  # nearest: no invented labels


def test_eval_and_resize_transforms():
    img, mask = _coded_pair(50, 30)
    image, target = EvalTransform(size=64)(img, mask)
    assert image.shape == (3, 64, 64) and torch.equal(target, torch.from_numpy(np.array(mask)))
    image, target = ResizeTransform(size=64)(img, mask)
    assert image.shape == (3, 64, 64) and target.shape == (64, 64)


def test_collate_stacks_train_masks_and_lists_eval_masks(sbd_root):
    bundle = build_datasets("sbd", root=sbd_root, img_size=32)
    task = SegmentationTask(num_classes=21, img_size=32)
    images, masks = task.collate([bundle.train[i] for i in range(3)])
    assert (
        images.dtype == torch.float32
        and images.shape == (3, 3, 32, 32)
        and 0 <= images.min() <= images.max() <= 1
    )
    assert masks.dtype == torch.int64 and masks.shape == (3, 32, 32)
    images, masks = task.collate([bundle.eval[i] for i in range(3)])
    assert images.shape == (3, 3, 32, 32)
    assert isinstance(masks, list) and [m.dtype for m in masks] == [torch.int64] * 3
    assert len({tuple(m.shape) for m in masks}) > 1  # the fixture's originals differ in size
