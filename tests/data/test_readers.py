"""The readers on hand-written files and on the fixtures, value by value: VOC boxes (1-based inclusive
pixels -> continuous [x - 1, x]), labels, difficult flags, sizes and ids; SBD .mat class values at
the 0-20/255 boundaries; CIFAR pixels and labels; split files."""

from __future__ import annotations

import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from torchvision.datasets import SBDataset

from data import build_datasets
from data.cifar import reader as cifar_reader
from data.files import DataFileError, read_split_ids
from data.fixtures import write_fixture
from data.sbd.fixture import write_mat
from data.sbd.reader import IGNORE_INDEX, SBD_CLASSES, read_item, read_mask
from data.voc.reader import CLASS_INDEX, SPLITS, VOC_CLASSES, image_id, read_annotation, xml_to_dict

# --- VOC annotations, hand-written ------------------------------------------------------------------------


def _xml(
    tmp_path: Path, objects: list[tuple], width: int = 100, height: int = 60, name: str = "a.xml"
) -> Path:
    """A VOC XML with ``objects`` = (class, xmin, ymin, xmax, ymax, difficult text or None)."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for cls, x1, y1, x2, y2, diff in objects:
        flag = "" if diff is None else f"<difficult>{diff}</difficult>"
        parts.append(
            f"<object><name>{cls}</name>{flag}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    path = tmp_path / name
    path.write_text("".join(parts) + "</annotation>")
    return path


def test_voc_boxes_labels_and_difficult_exact(tmp_path):
    """The 1-based -> continuous shift applied to the wrong corners (only xmin-1, ymin-1), labels off by one,
    a missing or padded <difficult> misread, or (h, w) given as (w, h)."""
    path = _xml(
        tmp_path,
        [
            ("aeroplane", 1, 1, 100, 60, "0"),  # the whole image: [0, 0, 100, 60]
            ("tvmonitor", 13, 7, 29, 41, "1"),
            ("person", 50, 20, 50, 20, None),  # a one-pixel box; no <difficult> tag means 0
            ("diningtable", 2, 3, 4, 5, " 1 "),
        ],
    )
    gt = read_annotation(path)
    assert gt["boxes"].dtype == np.float32
    assert gt["boxes"].tolist() == [[0, 0, 100, 60], [12, 6, 29, 41], [49, 19, 50, 20], [1, 2, 4, 5]]
    assert gt["labels"].tolist() == [0, 19, 14, 10]
    assert gt["difficult"].tolist() == [False, True, False, True]
    assert gt["orig_size"] == (60, 100)


def test_voc_class_index_is_the_devkit_order():
    """A class list reordered or shifted: every class's index in the devkit's alphabetical order."""
    devkit = (
        "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
        "pottedplant sheep sofa train tvmonitor"
    ).split()
    assert list(VOC_CLASSES) == devkit
    assert CLASS_INDEX == {name: i for i, name in enumerate(devkit)}


@pytest.mark.parametrize(
    ("box", "ok"),
    [
        ((0, 0, 100, 60), True),  # on every edge: allowed
        ((1, 1, 1, 1), True),  # xmin == xmax allowed
        ((-1, 0, 10, 10), False),
        ((0, 0, 101, 60), False),  # one past the width
        ((0, 0, 100, 61), False),  # one past the height
        ((10, 5, 9, 8), False),  # inverted x
        ((10, 9, 20, 8), False),  # inverted y
    ],
)
def test_voc_box_bounds_boundaries(tmp_path, box, ok):
    """A strict < where the devkit allows a box on the image edge, or an inverted box let through."""
    path = _xml(tmp_path, [("dog", *box, "0")])
    if ok:
        assert read_annotation(path)["boxes"].shape == (1, 4)
    else:
        with pytest.raises(DataFileError, match=r"outside the 100x60 image"):
            read_annotation(path)


@pytest.mark.parametrize("flag", ["2", "yes", "-1"])
def test_voc_difficult_other_than_0_or_1_is_refused(tmp_path, flag):
    """A <difficult> value other than 0/1 silently read as True or False."""
    with pytest.raises(DataFileError, match="not 0 or 1"):
        read_annotation(_xml(tmp_path, [("dog", 1, 1, 5, 5, flag)]))


def test_voc_no_objects_and_one_object(tmp_path):
    """An empty annotation must give (0, 4) boxes; a single object must not be dropped or split."""
    gt = read_annotation(_xml(tmp_path, []))
    assert gt["boxes"].shape == (0, 4) and gt["labels"].tolist() == [] and gt["difficult"].tolist() == []
    one = xml_to_dict(ET.parse(_xml(tmp_path, [("cat", 3, 4, 9, 10, "0")], name="b.xml")).getroot())
    assert isinstance(one["annotation"]["object"], list) and len(one["annotation"]["object"]) == 1
    assert one["annotation"]["object"][0]["bndbox"] == {"xmin": "3", "ymin": "4", "xmax": "9", "ymax": "10"}


def test_voc_image_id_and_splits():
    """An id taken from the wrong path parts, or the VOC07+12 / VOC07-test splits changed."""
    assert image_id("/d/VOCdevkit/VOC2012/JPEGImages/2012_000123.jpg") == "VOC2012/2012_000123"
    assert image_id(Path("x/VOC2007/JPEGImages/000005.jpg")) == "VOC2007/000005"
    assert SPLITS == {"train": [("2007", "trainval"), ("2012", "trainval")], "eval": [("2007", "test")]}


# --- VOC fixture through the loader, against its XML read independently -----------------------------------


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_fixture(
        "voc", tmp_path_factory.mktemp("voc_exact"), n_trainval07=3, n_test07=3, n_trainval12=2
    )


def _objects_from_xml(path: Path) -> tuple[list[list[float]], list[str], list[bool], tuple[int, int]]:
    root = ET.parse(path).getroot()
    boxes, names, flags = [], [], []
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        names.append(obj.find("name").text)
        d = obj.find("difficult")
        flags.append(d is not None and d.text == "1")
    size = (int(root.find("size/height").text), int(root.find("size/width").text))
    return boxes, names, flags, size


def test_voc_eval_meta_is_the_xml_exactly(voc_root):
    """Eval meta whose boxes, labels, difficult flags, size or id differ from the XML by any amount."""
    bundle = build_datasets("voc", root=str(voc_root), img_size=64, augment=False)
    base = voc_root / "VOCdevkit" / "VOC2007"
    ids = (base / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert ids == ["000004", "000005", "000006"]  # numbered on after the 3 trainval images
    assert len(bundle.eval) == 3
    for i, stem in enumerate(ids):
        image, (targets, meta) = bundle.eval[i]
        boxes, names, flags, size = _objects_from_xml(base / "Annotations" / f"{stem}.xml")
        assert meta["boxes"].tolist() == boxes
        assert [VOC_CLASSES[k] for k in meta["labels"].tolist()] == names
        assert meta["difficult"].tolist() == flags
        assert meta["orig_size"] == size and meta["image_id"] == f"VOC2007/{stem}"
        with Image.open(base / "JPEGImages" / f"{stem}.jpg") as jpg:
            assert (jpg.height, jpg.width) == size
        # targets: [class, cx, cy, w, h] of the letterboxed boxes, difficult ones included at eval
        s, (px, py) = meta["scale"], meta["pad"]
        expected = [
            [
                CLASS_INDEX[n],
                (b[0] + b[2]) / 2 * s + px,
                (b[1] + b[3]) / 2 * s + py,
                (b[2] - b[0]) * s,
                (b[3] - b[1]) * s,
            ]
            for b, n in zip(boxes, names)
        ]
        np.testing.assert_allclose(targets.numpy(), np.array(expected, np.float32).reshape(-1, 5), atol=1e-4)


def test_voc_fixture_flags_cover_all_three_kinds(voc_root):
    """The fixture must hold difficult, not-difficult and tag-less objects, or the flag tests prove little."""
    kinds = set()
    for xml in (voc_root / "VOCdevkit").rglob("*.xml"):
        for obj in ET.parse(xml).getroot().findall("object"):
            d = obj.find("difficult")
            kinds.add("missing" if d is None else d.text)
    assert kinds == {"0", "1", "missing"}


def test_voc_train_targets_drop_exactly_the_difficult_objects(voc_root):
    """Training targets keeping difficult objects (YOLO's VOC labels drop them), or dropping others."""
    bundle = build_datasets("voc", root=str(voc_root), img_size=64, augment=False)
    for i in range(len(bundle.train)):
        _, (targets, meta) = bundle.train[i]
        kept = meta["labels"][~meta["difficult"]].tolist()
        assert targets[:, 0].long().tolist() == kept


# --- split files ---------------------------------------------------------------------------------------


def test_read_split_ids_order_whitespace_and_duplicates(tmp_path):
    """Ids reordered, blank lines or padding kept as ids, or a repeat not reported with its count."""
    f = tmp_path / "train.txt"
    f.write_text("b\n  a  \n\nc\nb\nb\nc\n")
    problems: list[str] = []
    assert read_split_ids(f, "get it.", problems) == ["b", "a", "c"]
    assert problems == [f"{f}: lists b 3 times; each image once.", f"{f}: lists c 2 times; each image once."]
    missing: list[str] = []
    assert read_split_ids(tmp_path / "none.txt", "extract it.", missing) == []
    assert missing == [f"{tmp_path / 'none.txt'}: is missing; extract it."]


# --- SBD masks ------------------------------------------------------------------------------------------


def test_sbd_classes_and_ignore_index():
    """The class list shifted (background must be 0, the VOC classes 1-20) or the void label changed."""
    assert len(SBD_CLASSES) == 21 and SBD_CLASSES[0] == "background"
    assert SBD_CLASSES[1] == "aeroplane" and SBD_CLASSES[15] == "person" and SBD_CLASSES[20] == "tvmonitor"
    assert IGNORE_INDEX == 255


def test_sbd_mask_values_read_exactly(tmp_path):
    """A mask read transposed, cast wrongly, or with any value changed (classes 0, 7, 15, 20 and 255)."""
    seg = np.array([[0, 7, 15], [20, 255, 0], [7, 7, 15], [0, 20, 255]], np.uint8)  # 4 rows, 3 columns
    write_mat(tmp_path / "m.mat", seg)
    got = read_mask(tmp_path / "m.mat")
    assert got.dtype == np.uint8 and got.tolist() == seg.tolist()


@pytest.mark.parametrize(
    ("values", "bad"),
    [
        ([0, 20], None),  # the last class
        ([0, 255], None),  # void
        ([0, 21], "21"),  # one past the last class
        ([0, 254], "254"),  # one short of void
        ([0, 21, 50, 100, 200, 254, 30], "21, 30, 50, 100, 200, ..."),  # five shown, then "..."
    ],
)
def test_sbd_mask_value_boundaries(tmp_path, values, bad):
    """Class range off by one (20 rejected or 21 accepted), 254 taken for void, or the listing garbled."""
    seg = np.array([values], np.uint8)
    write_mat(tmp_path / "m.mat", seg)
    if bad is None:
        assert read_mask(tmp_path / "m.mat").tolist() == [values]
    else:
        with pytest.raises(
            DataFileError, match="has mask values " + bad.replace(".", r"\.") + " outside 0-20 and 255"
        ):
            read_mask(tmp_path / "m.mat")


def test_sbd_mask_stored_as_double_is_read_as_its_values(tmp_path):
    """A MATLAB double mask (20.0) refused or altered; a fractional 20.5 let through."""
    scipy.io.savemat(tmp_path / "d.mat", {"GTcls": {"Segmentation": np.array([[0.0, 20.0], [255.0, 3.0]])}})
    got = read_mask(tmp_path / "d.mat")
    assert got.dtype == np.uint8 and got.tolist() == [[0, 20], [255, 3]]
    scipy.io.savemat(tmp_path / "f.mat", {"GTcls": {"Segmentation": np.array([[0.0, 20.5]])}})
    with pytest.raises(DataFileError, match="20.5"):
        read_mask(tmp_path / "f.mat")


def test_sbd_read_item_mask_is_an_L_image_of_the_values(tmp_path):
    """read_item changing the mask (mode, size, values) on its way to the transforms."""
    seg = np.array([[0, 7, 15, 255], [20, 0, 7, 15]], np.uint8)
    write_mat(tmp_path / "m.mat", seg)
    Image.new("RGB", (4, 2), (9, 9, 9)).save(tmp_path / "i.jpg", quality=95)
    img, mask = read_item(tmp_path / "i.jpg", tmp_path / "m.mat")
    assert img.size == (4, 2) and mask.mode == "L" and np.asarray(mask).tolist() == seg.tolist()
    Image.new("RGB", (2, 4), (9, 9, 9)).save(tmp_path / "t.jpg", quality=95)  # transposed size
    with pytest.raises(DataFileError, match="has a 4x2 mask but t.jpg is 2x4"):
        read_item(tmp_path / "t.jpg", tmp_path / "m.mat")


def test_sbd_fixture_splits_and_masks_through_the_loader(tmp_path):
    """Split files naming other ids, or the eval mask not the .mat's exact values."""
    root = write_fixture("sbd", tmp_path, n_train=3, n_val=2)
    assert (root / "train.txt").read_text().split() == ["2008_000001", "2008_000002", "2008_000003"]
    assert (root / "val.txt").read_text().split() == ["2008_000004", "2008_000005"]
    bundle = build_datasets("sbd", root=root, img_size=32)
    assert (len(bundle.train), len(bundle.eval)) == (3, 2)
    raw = SBDataset(str(root), image_set="val", mode="segmentation")
    assert [Path(p).stem for p in raw.masks] == ["2008_000004", "2008_000005"]
    for i, stem in enumerate(["2008_000004", "2008_000005"]):
        mat = scipy.io.loadmat(root / "cls" / f"{stem}.mat")["GTcls"]["Segmentation"].flat[0]
        assert bundle.eval[i][1].numpy().tolist() == mat.tolist()


# --- CIFAR-100 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_fixture("cifar100", tmp_path_factory.mktemp("cifar_exact"), n_train=7, n_test=5)


def test_cifar_labels_and_pixels_of_every_item(cifar_root):
    """A label list shifted or a channel-planar row unpacked in the wrong order (R, G, B planes of 32x32)."""
    bundle = build_datasets("cifar100", root=str(cifar_root))
    folder = cifar_root / "cifar-100-python"
    for split, ds in (("train", bundle.train), ("test", bundle.eval)):
        with open(folder / split, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
        assert list(ds.targets) == raw["fine_labels"] == list(range(len(ds)))
        for i in range(len(ds)):
            row = raw["data"][i]
            # pixel (y=3, x=17) of each plane: offset c * 1024 + y * 32 + x
            assert ds.data[i, 3, 17].tolist() == [row[c * 1024 + 3 * 32 + 17] for c in range(3)]
            assert np.array_equal(ds.data[i], row.reshape(3, 32, 32).transpose(1, 2, 0))
    assert bundle.info["classes"][:2] == ["apple", "aquarium_fish"] and len(bundle.info["classes"]) == 100


def test_cifar_root_precedence(monkeypatch, tmp_path):
    """The config root losing to $CIFAR100_ROOT, or the default folder used while the variable is set."""
    monkeypatch.setenv("CIFAR100_ROOT", str(tmp_path / "env"))
    assert cifar_reader.resolve_root(tmp_path / "cfg") == (tmp_path / "cfg").resolve()
    assert cifar_reader.resolve_root(None) == (tmp_path / "env").resolve()
    assert cifar_reader.resolve_root("") == (tmp_path / "env").resolve()
    monkeypatch.delenv("CIFAR100_ROOT")
    assert cifar_reader.resolve_root(None) == Path("datasets/cifar100").resolve()


def test_cifar_md5_source_and_message(cifar_root, tmp_path):
    """A fixture checked against the real archive's md5s (or real data against the manifest), or a
    message naming the wrong digest."""
    folder = cifar_root / "cifar-100-python"
    md5 = cifar_reader.expected_md5(folder)
    assert set(md5) == {"train", "test", "meta"} and md5 != cifar_reader.ARCHIVE_MD5
    assert all(cifar_reader.md5_problem(folder / name, md5[name]) is None for name in md5)
    assert cifar_reader.expected_md5(tmp_path) == cifar_reader.ARCHIVE_MD5
    msg = cifar_reader.md5_problem(folder / "meta", "0" * 32)
    assert msg.startswith(f"{folder / 'meta'}: has md5 {md5['meta']} where {'0' * 32} is expected; ")
    assert cifar_reader.md5_problem(tmp_path / "gone", "x").startswith(f"{tmp_path / 'gone'}: is missing; ")


# --- digits --------------------------------------------------------------------------------------------


def test_digits_images_keep_their_labels_and_the_training_statistics():
    """Images and labels split apart, eval normalised with its own statistics, or the 360-image test split
    resized: every eval image, un-normalised with the training mean/std, is a scikit-learn digit of its label."""
    from sklearn.datasets import load_digits

    bundle = build_datasets("digits")
    (xt, yt), (xe, ye) = bundle.train.tensors, bundle.eval.tensors
    assert (len(yt), len(ye)) == (1437, 360) and xt.shape[1:] == (1, 8, 8)
    assert abs(float(xt.double().mean())) < 1e-6 and abs(float(xt.double().std(unbiased=False)) - 1) < 1e-5
    # raw pixels are 0..16, so the training values are -m/s + v / (16 s): recover m and s from them
    levels = np.unique(xt.double().numpy().round(5))
    step = float(np.min(np.diff(levels)))
    s = 1 / (16 * step)
    m = -float(levels[0]) * s
    digits = load_digits()
    known = {img.astype(np.int64).tobytes(): int(t) for img, t in zip(digits.images, digits.target)}
    for x, y in ((xt, yt), (xe, ye)):
        raw = (x.double().numpy()[:, 0] * s + m) * 16
        assert np.abs(raw - raw.round()).max() < 1e-3
        for img, label in zip(raw.round().astype(np.int64), y.tolist()):
            assert known[img.tobytes()] == label
    counts = np.bincount(ye.numpy(), minlength=10)
    assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37  # stratified: 20 % of each class


# --- the checkers' histograms --------------------------------------------------------------------------


def test_voc_check_item_counts_objects_per_class_difficult_included(tmp_path):
    """The histogram counting images instead of objects, dropping difficult ones, or shifting class names."""
    from data.voc.check import check_item

    xml = _xml(
        tmp_path,
        [("dog", 1, 1, 5, 5, "0"), ("dog", 6, 6, 9, 9, "1"), ("tvmonitor", 2, 2, 4, 4, None)],
        width=20,
        height=10,
    )
    Image.new("RGB", (20, 10), (1, 2, 3)).save(tmp_path / "a.jpg", quality=95)
    report = check_item("VOC2007 test", str(tmp_path / "a.jpg"), str(xml))
    assert report.problems == [] and report.images == 1
    assert dict(report.classes) == {"dog": 2, "tvmonitor": 1}


def test_sbd_check_item_counts_images_per_class_without_void(tmp_path):
    """The SBD histogram counting pixels, counting the 255 void as a class, or mislabelling class 20."""
    from data.sbd.check import check_item

    seg = np.array([[0, 0, 20, 255], [15, 15, 15, 0]], np.uint8)
    write_mat(tmp_path / "m.mat", seg)
    Image.new("RGB", (4, 2), (1, 2, 3)).save(tmp_path / "i.jpg", quality=95)
    report = check_item("train", str(tmp_path / "i.jpg"), str(tmp_path / "m.mat"))
    assert report.problems == [] and dict(report.classes) == {"background": 1, "tvmonitor": 1, "person": 1}


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ([0, 99, 5], None),
        ([0, 100, 5], "[100]"),
        ([-1, 3, 7], "[-1]"),
        ([0, 1], "2 fine_labels for 3 images"),
    ],
)
def test_cifar_check_label_range_boundaries(tmp_path, labels, problem):
    """The fine-label range off by one (99 refused or 100 accepted), or a label count mismatch let through."""
    import hashlib

    from data.cifar.check import check_item

    path = tmp_path / "train"
    obj = {"data": np.zeros((3, 3072), np.uint8), "fine_labels": labels}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    report = check_item("train", str(path), hashlib.md5(path.read_bytes()).hexdigest())
    if problem is None:
        assert report.problems == [] and report.images == 3
        assert dict(report.classes) == {"apple": 1, "worm": 1, "bed": 1}  # classes 0, 99 and 5
    else:
        assert len(report.problems) == 1 and problem in report.problems[0]
