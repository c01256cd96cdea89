"""Defaults and boundaries of the data builders and the tables script, value by value: each builder's
default equals its config (a wrong default changes every run that does not set it), YOLOv7's box filter
at exactly min_size, the demo data's declared layout, and what make_tables writes in its edge cases."""

from __future__ import annotations

import inspect

import numpy as np
import yaml

from data import build_datasets
from data.sbd import dataset as sbd_dataset
from data.voc.augment import AugmentConfig, keep_boxes
from scripts import make_tables
from tests.helpers import ROOT
from tests.scripts.test_make_tables import REFERENCE
from tests.scripts.test_make_tables import write_exact_run as write_run


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "dataset" / f"{name}.yaml").read_text())


def test_sbd_builder_defaults_are_the_configs():
    params = inspect.signature(sbd_dataset.build).parameters
    cfg = _config("sbd")
    assert list(params["scale"].default) == cfg["scale"] == [0.5, 2.0]
    assert params["flip"].default == cfg.get("flip", 0.5) == 0.5


def test_voc_augmentation_defaults_are_yolov7_tinys_scratch_hyperparameters():
    """hyp.scratch.tiny.yaml: scale 0.5, translate 0.1, hsv 0.015/0.7/0.4, fliplr 0.5; box_candidates
    wh_thr 2, area_thr 0.1, ar_thr 20."""
    assert AugmentConfig() == AugmentConfig(
        scale=0.5, translate=0.1, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, fliplr=0.5,
        min_size=2.0, min_area_ratio=0.1, max_aspect=20.0,
    )  # fmt: skip


def test_a_box_exactly_min_size_wide_or_high_is_dropped():
    """YOLOv7's thresholds are strict: w > 2 and h > 2 pixels, so 2.0 exactly goes, 2.01 stays."""
    boxes = np.array(
        [[10, 10, 40, 12.0], [10, 10, 12.0, 40], [10, 10, 40, 12.01], [10, 10, 12.01, 40]], dtype=np.float64
    )
    _, keep = keep_boxes(boxes, 64, AugmentConfig())
    assert keep.tolist() == [False, False, True, True]


def test_digits_declares_its_layout():
    bundle = build_datasets("digits")
    assert bundle.info["channels"] == 1 and bundle.info["image_size"] == (8, 8)
    image, _ = bundle.train[0]
    assert tuple(image.shape) == (1, 8, 8) and bundle.num_classes == 10


def test_the_header_names_the_device_the_runs_used(tmp_path):
    evals = {"top1_err": [30.0], "top5_err": [10.0]}
    write_run(tmp_path / "a", "table3", REFERENCE["table3"], 0, evals, summary_extra={"device": "cuda:0"})
    write_run(tmp_path / "b", "table3", REFERENCE["table3"], 0, evals)
    for runs, device in (("a", "cuda:0"), ("b", "unknown")):
        make_tables.make_tables(tmp_path / runs, tmp_path / f"out_{runs}")
        assert f"device={device}, train wall time" in (tmp_path / f"out_{runs}" / "table3.md").read_text()


def test_a_target_with_paper_rows_that_have_no_runs(tmp_path):
    """A declared target: rows with runs get steps-to-target, the paper's other rows (no runs) none."""
    run = write_run(
        tmp_path, "table3", REFERENCE["table3"], 0, {"top1_err": [30.0, 20.0], "top5_err": [9.0, 8.0]}
    )
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "target": {"metric": "top1_err", "value": 25.0}}))
    make_tables.make_tables(tmp_path, tmp_path / "out")
    csv = (tmp_path / "out" / "table3.csv").read_text()
    assert csv.count("steps_to_top1_err<=25,median,20,") == 1  # the reference row only (step of epoch 2)


def test_main_says_when_nothing_was_written(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert make_tables.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert "No runs of a known table under" in capsys.readouterr().out
