"""A tiny Semantic Boundaries Dataset in the real on-disk layout (what ``benchmark.tgz`` extracts to):

    img/<id>.jpg, cls/<id>.mat, train.txt, val.txt

Each ``cls/<id>.mat`` holds the MATLAB struct ``GTcls`` with the fields SBD stores: ``Segmentation``
(uint8 H x W, 0 background, 1-20 the VOC classes), ``Boundaries`` (a 20 x 1 cell of sparse masks, one per
class) and ``CategoriesPresent``; ``torchvision.datasets.SBDataset`` reads it unchanged in both modes.
Images show filled shapes whose colour and kind (rectangle, ellipse, triangle) depend on the class, on a
noisy background, so a small network can learn them. Like real SBD (and unlike VOC2012's PNG masks),
the masks have no 255 "void" border: every pixel is 0-20 (tests check this with ``np.unique``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image, ImageDraw

DEFAULT_CLASSES = (1, 8, 12, 15)  # aeroplane, cat, dog, person: ellipse, triangle, rectangle, rectangle
SHAPES = ("rectangle", "ellipse", "triangle")


def class_style(label: int) -> tuple[tuple[int, int, int], str]:
    """Colour and shape of class ``label`` (1-20): distinct colours, shapes cycling with the label."""
    hue = (label * 0.381966) % 1.0  # golden-ratio steps: any few labels get far-apart hues
    rgb = np.array(Image.new("HSV", (1, 1), (int(hue * 255), 220, 230)).convert("RGB")).reshape(3)
    return tuple(int(v) for v in rgb), SHAPES[label % len(SHAPES)]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: list[int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        getattr(draw, shape)(box, fill=fill)


def boundaries(seg: np.ndarray, num_classes: int = 20) -> np.ndarray:
    """SBD's ``Boundaries`` cell: per class, the sparse mask of its pixels with a 4-neighbour of another label."""
    edge = np.zeros(seg.shape, dtype=bool)
    edge[1:, :] |= seg[1:, :] != seg[:-1, :]
    edge[:-1, :] |= seg[:-1, :] != seg[1:, :]
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    cell = np.empty((num_classes, 1), dtype=object)
    for c in range(num_classes):
        cell[c, 0] = scipy.sparse.csc_matrix(edge & (seg == c + 1))
    return cell


def write_mat(path: Path, seg: np.ndarray) -> None:
    """Write ``seg`` (uint8 H x W) as SBD's ``GTcls`` struct."""
    present = np.unique(seg[(seg > 0) & (seg <= 20)]).astype(np.uint8).reshape(-1, 1)
    gt = {"Boundaries": boundaries(seg), "Segmentation": seg.astype(np.uint8), "CategoriesPresent": present}
    scipy.io.savemat(path, {"GTcls": gt})


def make_sample(
    rng: np.random.Generator, w: int, h: int, classes: Sequence[int], max_objects: int
) -> tuple[Image.Image, np.ndarray]:
    """One image of 1..max_objects class shapes (later ones drawn over earlier ones) and its mask."""
    base = rng.integers(90, 170, size=3).astype(np.float32)
    noise = rng.normal(0.0, 12.0, size=(h, w, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", (w, h), 0)
    draw_img, draw_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(classes[int(rng.integers(len(classes)))])
        bw, bh = int(rng.integers(w // 4, w // 2 + 1)), int(rng.integers(h // 4, h // 2 + 1))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        colour, shape = class_style(label)
        _draw(draw_img, shape, [x0, y0, x0 + bw, y0 + bh], colour)
        _draw(draw_mask, shape, [x0, y0, x0 + bw, y0 + bh], label)
    return img, np.array(mask, dtype=np.uint8)


def write_sbd(
    root: Path,
    n_train: int = 8,
    n_val: int = 4,
    classes: Sequence[int] = DEFAULT_CLASSES,
    max_objects: int = 3,
    size_range: tuple[int, int] = (64, 96),
    seed: int = 0,
) -> Path:
    """Write the tiny SBD under ``root`` and return ``root`` (the folder holding img/, cls/, train.txt)."""
    if any(not 1 <= int(c) <= 20 for c in classes):
        raise ValueError(f"SBD classes are 1-20 (0 is background), got {list(classes)}.")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "cls").mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, count in (("train", n_train), ("val", n_val)):
        ids = []
        for _ in range(count):
            counter += 1
            stem = f"2008_{counter:06d}"
            w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            img, seg = make_sample(rng, w, h, classes, max_objects)
            img.save(root / "img" / f"{stem}.jpg", quality=95)
            write_mat(root / "cls" / f"{stem}.mat", seg)
            ids.append(stem)
        (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def break_sbd(root: Path) -> dict[str, str]:
    """Plant one defect per file in the fixture ``write_sbd(root)`` wrote (default sizes); return
    {path of the bad file: a phrase its problem report must contain}."""
    root = Path(root)
    ids = (root / "train.txt").read_text().split() + (root / "val.txt").read_text().split()
    mat = lambda k: root / "cls" / f"{ids[k]}.mat"  # noqa: E731
    jpg = lambda k: root / "img" / f"{ids[k]}.jpg"  # noqa: E731
    seg = lambda k: scipy.io.loadmat(mat(k))["GTcls"]["Segmentation"].flat[0]  # noqa: E731
    expected: dict[str, str] = {}

    mat(0).write_bytes(b"not a MATLAB file at all" * 8)
    expected[str(mat(0))] = "is not a readable MATLAB file"
    scipy.io.savemat(mat(1), {"Segmentation": seg(1)})  # the mask, but not inside GTcls
    expected[str(mat(1))] = "has no GTcls struct"
    scipy.io.savemat(mat(2), {"GTcls": {"Boundaries": boundaries(seg(2)), "CategoriesPresent": [[1]]}})
    expected[str(mat(2))] = "without a Segmentation field"
    stray = seg(3).copy()
    stray[0, 0] = 50
    write_mat(mat(3), stray)
    expected[str(mat(3))] = "has mask values 50 outside 0-20 and 255"
    write_mat(mat(4), seg(4)[:-3])
    expected[str(mat(4))] = "mask but"
    data = jpg(5).read_bytes()
    jpg(5).write_bytes(data[: len(data) * 2 // 3])
    expected[str(jpg(5))] = "is not a readable image (image file is truncated"
    mat(8).unlink()  # a val item
    expected[str(mat(8))] = "is missing"
    return expected
