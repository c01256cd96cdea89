"""scripts/check_data.py and the loaders on broken trees in the real on-disk formats, one defect per file:
the checker names every bad file with its reason and exits 1; the loader raises one sentence naming the
file when that item is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data import build_datasets
from data.files import DataFileError
from data.fixtures import write_broken_fixture, write_fixture
from scripts.check_data import main
from tests.helpers import ROOT

NAMES = ("voc", "sbd", "cifar100")


@pytest.fixture(scope="module", params=NAMES)
def broken(request, tmp_path_factory) -> tuple[str, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp(f"broken_{request.param}")
    return request.param, root, write_broken_fixture(request.param, root)


def _problem_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith("  /")]


def test_check_data_names_every_bad_file_and_reason(broken, capsys) -> None:
    name, root, expected = broken
    code = main([f"dataset={name}", f"dataset.root={root}", "workers=1", "strict_counts=false"])
    out = capsys.readouterr().out
    assert code == 1
    lines = _problem_lines(out)
    for path, reason in expected.items():
        assert any(line.startswith(f"{path}: ") and reason in line for line in lines), (path, reason, out)
    named = {line.split(": ")[0] for line in lines}
    assert named == set(expected), "a file reported that has no defect, or one missed"


def test_loader_raises_one_sentence_naming_the_file(broken) -> None:
    name, root, expected = broken
    if name == "cifar100":  # the whole split is read at build time: build itself must name the file
        with pytest.raises(DataFileError) as err:
            build_datasets(name, root=str(root))
        assert str(root / "cifar-100-python" / "train") in str(err.value)
        return
    bundle = build_datasets(name, root=str(root), augment=False, img_size=64)
    raised: dict[str, str] = {}
    for split in (bundle.train, bundle.eval):
        for i in range(len(split)):
            try:
                split[i]
            except DataFileError as err:
                message = str(err)
                assert message.count("; ") == 1 and message.endswith("."), message  # one sentence
                raised[message.split(": ")[0]] = message
    files = {p: r for p, r in expected.items() if not p.endswith(".txt")}  # a repeated id is no bad file
    assert set(raised) == set(files)
    for path, reason in files.items():
        assert reason in raised[path]


def test_clean_fixture_passes_and_counts_are_compared(tmp_path, capsys) -> None:
    root = write_fixture("voc", tmp_path)
    assert main(["dataset=voc", f"dataset.root={root}", "workers=2", "strict_counts=false"]) == 0
    out = capsys.readouterr().out
    assert "No bad files." in out and "OK" in out
    assert re.search(r"VOC2007 trainval\s+8\s+8\s+5,011\s+DIFFERS", out)
    assert re.search(r"train\s+12\s+16,551", out) and re.search(r"VOC2007 test\s+4\s+4\s+4,952", out)
    # fixture counts are not the real data set's: a strict check (the default) fails on them
    assert main(["dataset=voc", f"dataset.root={root}", "workers=1"]) == 1
    assert (
        "count mismatch: VOC2012 trainval: 4 images, the real data set has 11,540" in capsys.readouterr().out
    )


def test_sbd_histogram_counts_images_per_class(tmp_path, capsys) -> None:
    root = write_fixture("sbd", tmp_path, n_train=3, n_val=2, classes=(8,))
    assert main(["dataset=sbd", f"dataset.root={root}", "workers=1", "strict_counts=false"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\n  cat\s+3\s+2\n", out) and re.search(r"\n  dog\s+0\s+0\n", out)


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["dataset=imagenet"], "is not one of voc, sbd, cifar100"),
        (["dataset=voc", "dataset.rot=/x"], "Unknown argument 'dataset.rot=/x'"),
        (["dataset=voc", "strict_counts=maybe"], "must be true or false"),
        (["dataset=voc", "dataset.root=/nonexistent/voc"], "/nonexistent/voc is not a folder"),
    ],
)
def test_bad_arguments_exit_2_with_a_sentence(argv, phrase, capsys) -> None:
    assert main(argv) == 2
    assert phrase in capsys.readouterr().err


def test_checks_run_without_importing_torch(tmp_path) -> None:
    """The readers are torch-free, so check_data starts in a fraction of a second (torch alone takes
    seconds to import) and its worker processes stay small."""
    import subprocess
    import sys

    root = write_fixture("sbd", tmp_path / "sbd", n_train=2, n_val=1)
    code = (
        "import sys; from scripts.check_data import main; "
        f"rc = main(['dataset=sbd', 'dataset.root={root}', 'workers=1', 'strict_counts=false']); "
        "loaded = [m for m in ('torch', 'torchvision') if m in sys.modules]; "
        "sys.exit(f'imported {loaded}') if loaded else sys.exit(rc)"
    )
    repo = ROOT
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_reader_constants_match_torchvision() -> None:
    """Our torch-free copies of what torchvision knows: CIFAR's md5s and VOC's XML-to-dict layout."""
    import xml.etree.ElementTree as ET

    from torchvision.datasets import CIFAR100, VOCDetection

    from data.cifar.reader import ARCHIVE_MD5
    from data.voc.reader import xml_to_dict

    assert ARCHIVE_MD5 == {
        **dict(CIFAR100.train_list),
        **dict(CIFAR100.test_list),
        "meta": CIFAR100.meta["md5"],
    }
    xml = (
        "<annotation><folder>VOC2007</folder><filename>1.jpg</filename><size><width>5</width>"
        "<height>4</height></size><object><name>dog</name><part><name>head</name></part><bndbox><xmin>1"
        "</xmin><ymin>1</ymin><xmax>3</xmax><ymax>2</ymax></bndbox></object><object><name>cat</name>"
        "<difficult>1</difficult></object></annotation>"
    )
    for text in (xml, xml.replace("<object><name>cat</name><difficult>1</difficult></object>", "")):
        root = ET.fromstring(text)
        assert xml_to_dict(root) == VOCDetection.parse_voc_xml(root)
    no_objects = ET.fromstring("<annotation><size><width>5</width><height>4</height></size></annotation>")
    assert xml_to_dict(no_objects) == VOCDetection.parse_voc_xml(no_objects)
