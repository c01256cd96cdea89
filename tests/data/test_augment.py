"""Every augmentation's exact output on tiny hand-made inputs: draws mapped from chosen uniforms, colours
from colorsys, crops at exact offsets, flips with x' = W - x, nearest-neighbour label masks with
non-consecutive values, padding values and positions, epoch-to-epoch order of the device loader."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from data.cifar import augment as cifar_aug
from data.cifar.augment import (
    AugmentParams,
    CifarEvalTransform,
    CifarTrainTransform,
    apply_params,
    draw_params,
    jitter_hsv,
    normalize,
    to_unit,
)
from data.cifar.device import DeviceLoader, DeviceResidentCifar
from data.sbd.augment import EvalTransform, ResizeTransform, TrainTransform
from data.voc import augment as voc_aug
from data.voc.augment import PAD_VALUE, AugmentConfig, hsv_jitter, letterbox, transform_boxes

# --- CIFAR-100: constants, normalisation, unit conversion ------------------------------------------------


def test_cifar_constants_are_the_authors():
    """A changed probability, hue range, factor range or mean/std (paper: 0.5, ±0.1, [1, 1.5], 0.5/0.5)."""
    assert (cifar_aug.P_HSV, cifar_aug.P_FLIP) == (0.5, 0.5)
    assert cifar_aug.HUE_SHIFT == 0.1 and (cifar_aug.SAT_MAX, cifar_aug.VAL_MAX) == (1.5, 1.5)
    assert (cifar_aug.MEAN, cifar_aug.STD) == (0.5, 0.5)


def test_normalize_exact_values():
    """Normalisation that is not (x - 0.5) / 0.5: 0 -> -1, 0.25 -> -0.5, 0.5 -> 0, 1 -> 1."""
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert normalize(x).tolist() == [-1.0, -0.5, 0.0, 1.0]


def test_to_unit_layout_and_scale_for_every_input_kind():
    """An HWC -> CHW transpose that mixes axes, or a scale other than /255 (255 -> 1.0, 51 -> 0.2)."""
    hwc = np.zeros((2, 3, 3), dtype=np.uint8)
    hwc[1, 2] = (255, 51, 0)  # row 1, column 2: R 255, G 51, B 0
    hwc[0, 1] = (0, 0, 102)
    for img in (hwc, Image.fromarray(hwc), torch.from_numpy(hwc).permute(2, 0, 1)):
        x = to_unit(img)
        assert x.shape == (3, 2, 3) and x.dtype == torch.float32
        assert x[:, 1, 2].tolist() == pytest.approx([1.0, 0.2, 0.0], abs=1e-7)
        assert x[:, 0, 1].tolist() == pytest.approx([0.0, 0.0, 0.4], abs=1e-7)
        assert x.sum().item() == pytest.approx(1.6, abs=1e-6)  # nothing else is lit


def test_eval_transform_is_normalised_pixels_only():
    """An eval transform that augments or skips normalisation: 0 -> -1, 255 -> 1, exactly, never flipped."""
    hwc = np.zeros((1, 4, 3), dtype=np.uint8)
    hwc[0, 0] = 255
    for _ in range(4):
        out = CifarEvalTransform()(hwc)
        assert out[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and (out[:, 0, 1:] == -1.0).all()


# --- CIFAR-100: the draws, from chosen uniforms --------------------------------------------------------


def _fixed_rand(rows: list[list[float]]):
    """A stand-in for torch.rand that returns the 7 x n uniforms ``rows`` (the draw_params layout)."""
    u = torch.tensor(rows, dtype=torch.float32)

    def fake(*shape, generator=None, device=None, **kwargs):
        assert tuple(shape) == tuple(u.shape)
        return u.clone()

    return fake


def test_draw_params_map_each_uniform_to_its_draw(monkeypatch):
    """Draw rows swapped, a <= for <, the hue sign/range, or the factor's inversion on the wrong coin side."""
    #        image:  0      1      2     3
    rows = [
        [0.49, 0.5, 0.0, 0.99],  # apply_hsv: u < 0.5
        [0.0, 0.75, 0.5, 0.25],  # hue: (2u - 1) * 0.1 -> -0.1, 0.05, 0, -0.05
        [0.5, 0.5, 1.0, 0.0],  # saturation f = 1 + 0.5 u -> 1.25, 1.25, 1.5, 1.0
        [0.7, 0.2, 0.5, 0.49],  # its coin: f kept when >= 0.5, else 1 / f -> 1.25, 0.8, 1.5, 1.0
        [0.2, 0.6, 0.0, 1.0],  # value f = 1 + 0.5 u -> 1.1, 1.3, 1.0, 1.5
        [0.1, 0.9, 0.3, 0.5],  # its coin -> 1/1.1, 1.3, 1.0, 1.5
        [0.3, 0.5, 0.4999, 0.0],  # flip: u < 0.5
    ]
    monkeypatch.setattr(torch, "rand", _fixed_rand(rows))
    p = draw_params(4)
    assert p.apply_hsv.tolist() == [True, False, True, False]
    assert p.hue_shift.tolist() == pytest.approx([-0.1, 0.05, 0.0, -0.05], abs=1e-7)
    assert p.sat_factor.tolist() == pytest.approx([1.25, 0.8, 1.5, 1.0], abs=1e-6)
    assert p.val_factor.tolist() == pytest.approx([1 / 1.1, 1.3, 1.0, 1.5], abs=1e-6)
    assert p.flip.tolist() == [True, False, True, True]


HSV_CASES = [  # (rgb pixel, hue shift, saturation factor, value factor)
    ((1.0, 0.0, 0.0), 1 / 3, 1.0, 1.0),  # red -> green
    ((1.0, 0.0, 0.0), -1 / 3, 1.0, 1.0),  # red -> blue (wraps below 0)
    ((1.0, 0.0, 0.0), 0.0, 0.5, 1.0),  # half saturation
    ((1.0, 0.0, 0.0), 0.0, 1.0, 0.5),  # half value
    ((0.2, 0.6, 0.4), 0.1, 1.5, 1 / 1.5),
    ((0.2, 0.6, 0.4), -0.1, 1 / 1.5, 1.5),  # value 0.6 x 1.5 = 0.9
    ((0.9, 0.5, 0.1), 0.07, 1.5, 1.5),  # saturation 0.889 x 1.5 and value 0.9 x 1.5 clip to 1
    ((0.4, 0.4, 0.4), 0.1, 1.5, 1.2),  # grey stays grey, brighter
    ((0.1, 0.05, 0.3), 0.1, 1.3, 1.0),  # hue 0.7 + 0.1
    ((0.3, 0.05, 0.1), 0.1, 1.0, 1.0),  # hue 0.967 + 0.1 wraps to 0.067
]


@pytest.mark.parametrize(("rgb", "dh", "fs", "fv"), HSV_CASES)
def test_jitter_hsv_matches_colorsys(rgb, dh, fs, fv):
    """Hue not wrapped, a factor on the wrong channel, no clipping, or the shift applied with the wrong sign."""
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    expected = colorsys.hsv_to_rgb((h + dh) % 1.0, min(s * fs, 1.0), min(v * fv, 1.0))
    x = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)
    out = jitter_hsv(x, torch.tensor([dh]), torch.tensor([fs]), torch.tensor([fv]))
    assert out.view(3).tolist() == pytest.approx(list(expected), abs=2e-6)


def _columns_image() -> torch.Tensor:
    """(1, 3, 2, 4): red rising along the columns, green along the rows (a flip of either axis shows)."""
    x = torch.zeros(1, 3, 2, 4)
    x[0, 0] = torch.tensor([0.1, 0.3, 0.5, 0.7])
    x[0, 1] = torch.tensor([[0.2], [0.6]])
    x[0, 2] = 0.05
    return x


def test_apply_params_flips_horizontally_and_jitters_only_where_drawn():
    """A vertical flip, jitter applied where apply_hsv is False, or the flip ignored."""
    x = _columns_image().expand(4, -1, -1, -1).contiguous()
    p = AugmentParams(
        apply_hsv=torch.tensor([False, False, True, True]),
        hue_shift=torch.full((4,), 1 / 3),
        sat_factor=torch.ones(4),
        val_factor=torch.ones(4),
        flip=torch.tensor([False, True, False, True]),
    )
    out = apply_params(x, p)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], x[0, :, :, [3, 2, 1, 0]])
    jittered = jitter_hsv(x[:1], torch.tensor([1 / 3]), torch.ones(1), torch.ones(1))[0]
    assert not torch.allclose(jittered, x[0], atol=0.05)
    assert torch.allclose(out[2], jittered) and torch.allclose(out[3], jittered[:, :, [3, 2, 1, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_per_image_transform_is_its_draws_applied(seed):
    """The per-image path deciding flip or jitter differently from the draws (same seed, same params)."""
    img = (_columns_image()[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    torch.manual_seed(seed)
    p = draw_params(1)
    expected = normalize(apply_params(to_unit(img).unsqueeze(0), p)[0])
    torch.manual_seed(seed)
    out = CifarTrainTransform()(img)
    assert torch.allclose(out, expected, atol=1e-6)


def test_per_image_transform_covers_all_four_branches():
    """Seeds 0-7 above exercise flip/no flip and jitter/no jitter (otherwise the test proves little)."""
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        p = draw_params(1)
        seen.add((p.apply_hsv.item(), p.flip.item()))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}


# --- CIFAR-100: the device loader, epoch by epoch --------------------------------------------------------


def _row_coded(n: int) -> DeviceResidentCifar:
    """n images, image i black except row i white (survives flips and any colour jitter's argmax), label i."""
    data = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        data[i, i] = 255
    return DeviceResidentCifar({"train": (data, list(range(n))), "eval": (data, list(range(n)))})


def _lit_row(images: torch.Tensor) -> list[int]:
    return images.amax(dim=(1, 3)).argmax(dim=1).tolist()


def test_eval_loader_order_and_pixels_are_exact():
    """An eval loader that shuffles, drops the tail, or shifts the batch window by one."""
    data = _row_coded(20)
    loader = data("eval", 6, shuffle=False, drop_last=False, device="cpu")
    batches = list(loader)
    assert len(loader) == 4 and [b[1].tolist() for b in batches] == [
        [0, 1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10, 11],
        [12, 13, 14, 15, 16, 17],
        [18, 19],
    ]
    images = torch.cat([b[0] for b in batches])
    expected = -torch.ones(20, 3, 32, 32)
    for i in range(20):
        expected[i, :, i] = 1.0
    assert torch.equal(images, expected)


def test_train_loader_two_epochs_each_a_permutation_and_seed_reproducible():
    """Sampling with replacement, one permutation reused every epoch, images paired with the wrong labels,
    or an order not reproducible from the generator's seed."""
    n, batch = 20, 6

    def two_epochs(seed: int) -> tuple[list[list[int]], torch.Tensor]:
        loader = _row_coded(n)("train", batch, True, True, "cpu", torch.Generator().manual_seed(seed))
        assert len(loader) == n // batch
        epochs, pixels = [], []
        for _ in range(2):
            labels = []
            for images, y in loader:
                assert images.shape[0] == batch
                assert _lit_row(images) == y.tolist()  # each image travels with its own label
                labels += y.tolist()
                pixels.append(images)
            epochs.append(labels)
        return epochs, torch.cat(pixels)

    (first, second), pixels = two_epochs(11)
    for epoch in (first, second):
        assert len(epoch) == len(set(epoch)) == 18 and set(epoch) <= set(range(n))
    assert first != second
    torch.manual_seed(0)  # the global RNG must play no part: only the loader's generator
    again, pixels_again = two_epochs(11)
    assert again == [first, second] and torch.equal(pixels_again, pixels)
    assert two_epochs(12)[0] != [first, second]


def test_train_loader_ranks_split_every_epoch_disjointly():
    """Ranks drawing different permutations (overlap) or a stride that skips or repeats samples."""
    n = 20

    def epochs(rank: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(5)
        loader = _row_coded(n)("train", 4, True, False, "cpu", gen, num_replicas=2, rank=rank)
        assert len(loader) == 3  # 10 per rank: batches of 4, 4, 2
        return [[v for _, y in loader for v in y.tolist()] for _ in range(2)]

    a, b = epochs(0), epochs(1)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb) == 10 and sorted(ea + eb) == list(range(n))
    assert a[0] != a[1]


def test_device_loader_length_with_and_without_drop_last():
    """The batch count off by one: 20 items in batches of 6 are 3 full batches or 4 with the tail."""
    data = _row_coded(20)
    assert len(data("eval", 6, False, True, "cpu")) == 3
    assert len(data("eval", 6, False, False, "cpu")) == 4
    assert len(data("eval", 5, False, True, "cpu")) == len(data("eval", 5, False, False, "cpu")) == 4
    assert len(DeviceLoader(torch.zeros(7, 3, 1, 1), torch.zeros(7), 2, False, False, False, None, 3, 0)) == 2


# --- VOC: boxes through the affine map, letterbox, flips, colour ------------------------------------------


def test_transform_boxes_scale_pad_and_mirror_exact():
    """The mirror written as size - 1 - x, x1/x2 not swapped after mirroring, or pad on the wrong axis."""
    boxes = np.array([[10, 20, 30, 40], [0, 0, 64, 8]], np.float32)
    moved = transform_boxes(boxes, 0.5, (3.0, 4.0), False, 64)
    assert moved.tolist() == [[8, 14, 18, 24], [3, 4, 35, 8]]
    flipped = transform_boxes(boxes, 0.5, (3.0, 4.0), True, 64)
    assert flipped.tolist() == [[46, 14, 56, 24], [29, 4, 61, 8]]  # x' = 64 - x, x1' from x2


def test_letterbox_eval_portrait_exact_geometry_and_grey_pad():
    """A wrong centring offset (odd leftover), the aspect not kept, or a pad value other than 114."""
    img = Image.new("RGB", (51, 120), (10, 200, 30))
    box = np.array([[10, 30, 40, 90]], np.float32)
    canvas, boxes, keep, geometry = letterbox(img, box, 64)
    # fit = 64/120; width floor(51 * 64/120) = floor(27.2) = 27, left = (64 - 27) // 2 = 18, top = 0
    assert geometry["scale"] == pytest.approx(64 / 120) and geometry["pad"] == (18.0, 0.0)
    assert not geometry["flip"] and keep.tolist() == [True]
    np.testing.assert_allclose(boxes[0], [10 * 64 / 120 + 18, 16, 40 * 64 / 120 + 18, 48], atol=1e-4)
    a = np.asarray(canvas)
    assert a.shape == (64, 64, 3) and PAD_VALUE == 114
    assert (a[:, :18] == 114).all() and (a[:, 45:] == 114).all()
    assert (a[:, 18:45] == (10, 200, 30)).all()


def _halves(w: int, h: int) -> Image.Image:
    """A grey image whose left quarter is black and whose rest is white (greys survive HSV round trips)."""
    a = np.full((h, w, 3), 255, np.uint8)
    a[:, : w // 4] = 0
    return Image.fromarray(a)


@pytest.mark.parametrize("flip", [False, True])
def test_letterbox_augmented_identity_zoom_and_flip_exact(flip):
    """With zoom 1 and no shift: pixels and boxes land exactly (mirrored to size - x when flipped)."""
    cfg = AugmentConfig(
        scale=0.0, translate=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=1.0 if flip else 0.0
    )
    img = _halves(64, 32)
    box = np.array([[4, 2, 20, 10]], np.float32)
    canvas, boxes, keep, geometry = letterbox(img, box, 64, cfg, torch.Generator().manual_seed(0))
    assert geometry["flip"] is flip and geometry["scale"] == 1.0 and geometry["pad"] == (0.0, 16.0)
    assert keep.tolist() == [True]
    assert boxes.tolist() == ([[44, 18, 60, 26]] if flip else [[4, 18, 20, 26]])
    a = np.asarray(canvas).astype(int)
    assert (a[:16] == 114).all() and (a[48:] == 114).all()  # grey above and below
    expected = np.asarray(img).astype(int)
    if flip:
        expected = expected[:, ::-1]
    assert np.abs(a[16:48] - expected).max() <= 1


def test_letterbox_augmented_zoom_out_pads_with_grey():
    """The affine fill colour: a half-size zoom leaves a grey (114) frame around the image."""
    cfg = AugmentConfig(scale=0.5, translate=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)
    # zoom drawn from [0.5, 1.5]: find a seed whose zoom is below 0.9 (the frame is then at least 3 px)
    for seed in range(20):
        canvas, _, _, geometry = letterbox(
            Image.new("RGB", (64, 64), (255, 255, 255)),
            np.zeros((0, 4), np.float32),
            64,
            cfg,
            torch.Generator().manual_seed(seed),
        )
        if geometry["scale"] < 0.9:
            break
    a = np.asarray(canvas)
    assert geometry["scale"] < 0.9
    assert (a[0] == 114).all() and (a[-1] == 114).all() and (a[:, 0] == 114).all() and (a[:, -1] == 114).all()
    assert (a[32, 32] == 255).all()


def _uniform_returning(which: str):
    """A stand-in for voc augment's ``_uniform`` returning the low or the high end of each range."""

    def fake(low, high, generator=None):
        return low if which == "low" else high

    return fake


@pytest.mark.parametrize(
    ("which", "cfg", "expected"),
    [
        # dh = +1/3 of the circle: red -> green
        ("high", AugmentConfig(hsv_h=1 / 3, hsv_s=0.0, hsv_v=0.0), (0, 255, 0)),
        # dh = -1/3: red -> blue
        ("low", AugmentConfig(hsv_h=1 / 3, hsv_s=0.0, hsv_v=0.0), (0, 0, 255)),
        # saturation gain 1 - 1 = 0: red -> white (value 255 kept)
        ("low", AugmentConfig(hsv_h=0.0, hsv_s=1.0, hsv_v=0.0), (255, 255, 255)),
        # value gain 1 - 0.5: red -> dark red
        ("low", AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.5), (127, 0, 0)),
    ],
)
def test_voc_hsv_jitter_hue_saturation_value_each_on_its_channel(monkeypatch, which, cfg, expected):
    """The hue shifted the wrong way, or a gain applied to the wrong HSV channel."""
    monkeypatch.setattr(voc_aug, "_uniform", _uniform_returning(which))
    out = hsv_jitter(Image.new("RGB", (2, 2), (255, 0, 0)), cfg)
    got = np.asarray(out)[0, 0].astype(int)
    assert np.abs(got - np.array(expected)).max() <= 2, got


# --- SBD: crops, pads, flips and nearest-neighbour masks ---------------------------------------------------

SPARSE = np.array([[0, 7, 15, 255], [15, 255, 0, 7], [7, 0, 255, 15], [255, 15, 7, 0]], np.uint8)


def _pair(mask: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """An RGB image whose red channel is the mask and green channel is the column index, and the mask."""
    h, w = mask.shape
    rgb = np.stack([mask, np.tile(np.arange(w, dtype=np.uint8), (h, 1)), np.zeros_like(mask)], -1)
    return Image.fromarray(rgb), Image.fromarray(mask)


def test_resize_transform_mask_is_nearest_with_sparse_labels():
    """A bilinear mask resize: labels {0, 7, 15, 255} must stay those values at exactly 2x2 blocks."""
    img, mask = _pair(SPARSE)
    _, target = ResizeTransform(size=8)(img, mask)
    assert target.dtype == torch.uint8
    assert target.numpy().tolist() == np.kron(SPARSE, np.ones((2, 2), np.uint8)).tolist()


def test_resize_transform_downscale_picks_the_centre_pixels():
    """A downscaled mask that blends or shifts: 8x8 -> 4x4 nearest samples source pixels (2i+1, 2j+1)."""
    big = np.kron(SPARSE, np.ones((2, 2), np.uint8))
    big[1::2, 1::2] = SPARSE[::-1]  # the sampled pixels carry another pattern than the block's corner
    img, mask = _pair(big)
    _, target = ResizeTransform(size=4)(img, mask)
    assert target.numpy().tolist() == SPARSE[::-1].tolist()


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_train_transform_scale_two_is_exact_blocks(flip):
    """The scaled mask resampled bilinearly, or the flip applied to the image only (labels 0/7/15/255)."""
    img, mask = _pair(SPARSE)
    image, target = TrainTransform(size=8, scale=(2.0, 2.0), flip=flip)(img, mask)
    expected = np.kron(SPARSE, np.ones((2, 2), np.uint8))
    if flip:
        expected = expected[:, ::-1]
    assert target.numpy().tolist() == expected.tolist()
    assert set(np.unique(target.numpy()).tolist()) == {0, 7, 15, 255}


def test_train_transform_pads_bottom_right_with_ignore_and_zero():
    """Padding put on the top/left, with the wrong value (image 0, mask 255), or the crop offset nonzero."""
    mask = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    img, m = _pair(mask)
    image, target = TrainTransform(size=5, scale=(1.0, 1.0), flip=0.0)(img, m)
    expected = np.full((5, 5), 255, np.uint8)
    expected[:2, :3] = mask
    assert target.numpy().tolist() == expected.tolist()
    assert image[0, :2, :3].tolist() == mask.tolist() and image[1, :2, :3].tolist() == [[0, 1, 2]] * 2
    canvas = np.ones((5, 5), bool)
    canvas[:2, :3] = False
    assert (image[:, torch.from_numpy(canvas)] == 0).all()


def test_train_crop_offsets_cover_exactly_the_valid_range():
    """A crop offset drawn from [0, high) instead of [0, high], or top and left ranges swapped."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, size=(6, 7)).astype(np.uint8)  # 6 rows, 7 columns; crop 5 -> top 0-1, left 0-2
    img, m = _pair(mask)
    seen = set()
    for seed in range(60):
        tf = TrainTransform(size=5, scale=(1.0, 1.0), flip=0.0, generator=torch.Generator().manual_seed(seed))
        image, target = tf(img, m)
        t = target.numpy()
        hits = [
            (top, left)
            for top in range(2)
            for left in range(3)
            if (mask[top : top + 5, left : left + 5] == t).all()
        ]
        assert len(hits) >= 1, t
        (top, left) = hits[0]
        assert image[1, 0, 0].item() == left  # the image is cut at the same offset
        seen.update(hits)
    assert seen == {(top, left) for top in range(2) for left in range(3)}


def test_eval_transform_resizes_image_only():
    """The eval mask resized (it must stay at the original size with its exact values)."""
    img, mask = _pair(SPARSE)
    image, target = EvalTransform(size=8)(img, mask)
    assert image.shape == (3, 8, 8) and target.numpy().tolist() == SPARSE.tolist()


def test_voc_augmentation_is_reproducible_from_the_generator():
    """Draws taken from the global RNG instead of the generator: same seed, same canvas, boxes and geometry."""
    img = _halves(80, 60)
    box = np.array([[10, 10, 60, 50]], np.float32)

    def run(seed: int, global_seed: int):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        return letterbox(img, box, 64, AugmentConfig(), torch.Generator().manual_seed(seed))

    runs = [run(4, g) for g in range(8)]
    c1, b1, k1, g1 = runs[0]
    for c2, b2, k2, g2 in runs[1:]:
        assert np.array_equal(np.asarray(c1), np.asarray(c2)) and np.array_equal(b1, b2)
        assert np.array_equal(k1, k2) and g1 == g2
    assert run(5, 0)[3] != g1


def _uniform_at(fractions: list[float]):
    """A stand-in for voc augment's ``_uniform``: the k-th call returns low + (high - low) * fractions[k]."""
    queue = list(fractions)

    def fake(low, high, generator=None):
        return low + (high - low) * queue.pop(0)

    return fake


def test_letterbox_zoom_and_shift_land_exactly(monkeypatch):
    """The zoom or a shift drawn into the wrong axis, sign or unit (pixels and boxes moved alike, so only
    exact values tell): zoom 1.5, x shifted +6.4, y shifted -6.4 px (0.1 of the 64-px canvas)."""
    # draws in order: hue, saturation, value (all 0-width here), zoom, x shift, y shift
    monkeypatch.setattr(voc_aug, "_uniform", _uniform_at([0.5, 0.5, 0.5, 1.0, 1.0, 0.0]))
    cfg = AugmentConfig(scale=0.5, translate=0.1, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)
    img = _halves(32, 64)  # 32 wide, 64 high (fit 1): black where x < 8
    box = np.array([[4, 20, 20, 40]], np.float32)
    canvas, boxes, keep, geometry = letterbox(img, box, 64, cfg, torch.Generator().manual_seed(0))
    # pad_x = 32 + 6.4 - 1.5 * 32 / 2 = 14.4; pad_y = 32 - 6.4 - 1.5 * 64 / 2 = -22.4
    assert (
        geometry["scale"] == 1.5 and geometry["pad"] == pytest.approx((14.4, -22.4)) and not geometry["flip"]
    )
    # x: 4 * 1.5 + 14.4 = 20.4, 20 * 1.5 + 14.4 = 44.4; y: 20 * 1.5 - 22.4 = 7.6, 40 * 1.5 - 22.4 = 37.6
    np.testing.assert_allclose(boxes[0], [20.4, 7.6, 44.4, 37.6], atol=1e-4)
    assert keep.tolist() == [True]
    a = np.asarray(canvas).astype(int)
    # the image spans columns 14.4 .. 62.4 (all rows); its black quarter ends at x = 8 * 1.5 + 14.4 = 26.4
    assert (a[:, :14] == 114).all() and (a[:, 63] == 114).all()
    assert (a[:, 15:26] == 0).all() and (a[:, 27:62] == 255).all()


@pytest.fixture(scope="module")
def tiny_roots(tmp_path_factory) -> dict[str, object]:
    from data.fixtures import write_fixture

    base = tmp_path_factory.mktemp("tiny_roots")
    return {
        "sbd": write_fixture("sbd", base / "sbd", n_train=1, n_val=1),
        "voc": write_fixture("voc", base / "voc", n_trainval07=1, n_test07=1, n_trainval12=1),
    }


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"flip": 1.0}, True),
        ({"flip": 0.0}, True),
        ({"flip": 1.01}, False),
        ({"flip": -0.01}, False),
        ({"scale": [1.0, 1.0]}, True),  # low == high: a fixed scale
        ({"scale": [0.0, 1.0]}, False),
        ({"img_size": 16}, True),
        ({"img_size": 15}, False),
    ],
)
def test_sbd_option_boundaries(tiny_roots, kwargs, ok):
    """A strict bound where the edge is valid (flip 1.0, scale [1, 1], img_size 16) or an open one where it is not."""
    from data import build_datasets

    if ok:
        bundle = build_datasets("sbd", root=tiny_roots["sbd"], **kwargs)
        assert isinstance(bundle.train.transforms, TrainTransform)
    else:
        with pytest.raises(ValueError):
            build_datasets("sbd", root=tiny_roots["sbd"], **kwargs)


@pytest.mark.parametrize(("img_size", "ok"), [(32, True), (320, True), (48, False), (100, False)])
def test_voc_img_size_multiple_of_32(tiny_roots, img_size, ok):
    """An image size YOLOv7-tiny's stride 32 cannot divide let through, or a multiple of 32 refused."""
    from data import build_datasets

    if ok:
        image, _ = build_datasets("voc", root=str(tiny_roots["voc"]), img_size=img_size, augment=False).eval[
            0
        ]
        assert image.shape == (3, img_size, img_size)
    else:
        with pytest.raises(ValueError, match=f"img_size={img_size} must be a multiple of 32"):
            build_datasets("voc", root=str(tiny_roots["voc"]), img_size=img_size)
