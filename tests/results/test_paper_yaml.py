"""results/paper.yaml against values typed here independently from the paper's text."""

from __future__ import annotations

import pytest
import yaml

import adamx
from tests.helpers import ROOT

PAPER = yaml.safe_load((ROOT / "results" / "paper.yaml").read_text())
TABLES = PAPER["tables"]
REGISTRY = set(adamx.OPTIMIZERS)  # the names runs are filed under


@pytest.mark.parametrize(
    ("table", "row", "col", "value"),
    [
        ("table3", "adamx", "top1_err", 34.27),
        ("table3", "adax", "top5_err", 12.99),
        ("table4", "adam", "top1_err", 40.05),
        ("table5", "adamx", "map75", 28.21),
        ("table6", "adax", "miou", 37.23),
        ("table7", "adam+adafactor", "top1_err", 41.22),
        ("table8", "adam+adax", "top5_err", 14.50),
        ("table9", "adam+adafactor", "map50", 45.50),
        ("table10", "adam+adax", "miou", 36.37),
        ("table11", "lion", "top5_err", 17.03),
        ("table12", "sgd", "top1_err", 63.83),
        ("table12", "adamx", "top5_err", 10.72),
    ],
)
def test_values(table: str, row: str, col: str, value: float) -> None:
    assert TABLES[table]["rows"][row]["values"][col] == value


def test_every_table_is_complete() -> None:
    assert sorted(TABLES, key=lambda k: int(k[5:])) == [f"table{n}" for n in range(3, 13)]
    n_values = 0
    for name, t in TABLES.items():
        assert set(t["rows"]) <= REGISTRY, name
        assert t["reference"] in t["rows"], name
        for row in t["rows"].values():
            assert set(row["values"]) == set(t["columns"]), name
            n_values += len(row["values"])
        for col in t["columns"]:
            assert col in PAPER["metrics"], (name, col)
    # 3 rows x 2 (T3, T4, T5) + 3 (T6) + 4 x 2 (T7, T8, T9) + 4 (T10) + 5 x 2 (T11, T12)
    assert n_values == 18 + 3 + 24 + 4 + 20


def test_settings() -> None:
    t3 = TABLES["table3"]["settings"]
    assert (t3["lr_peak"], t3["lr_min"], t3["t1"], t3["batch_size"], t3["epochs"]) == (
        3e-3,
        3e-5,
        37488,
        64,
        80,
    )
    assert (
        TABLES["table4"]["settings"]["lr_peak"] == 2.2e-5
        and TABLES["table4"]["settings"]["schedule"] == "constant"
    )
    assert TABLES["table5"]["settings"]["t1"] == 25680 and TABLES["table5"]["settings"]["batch_size"] == 32
    assert TABLES["table6"]["settings"]["t1"] == 12720 and TABLES["table6"]["settings"]["lr_peak"] == 1e-3
    assert TABLES["table8"]["settings"]["model"] == "swinv2_s"
    t11 = TABLES["table11"]["optimizer_settings"]
    assert t11["sgd"] == {"lr_peak": 0.1, "lr_min": 1e-3, "t1": 37488, "weight_decay": 1e-3, "momentum": 0.9}
    assert t11["lion"]["weight_decay"] == 0.1 and t11["adamx"]["lr_peak"] == 0.01
    t12 = TABLES["table12"]["optimizer_settings"]
    assert (t12["lion"]["lr_peak"], t12["lion"]["lr_min"]) == (1e-4, 1e-6)
    assert t12["radam"]["lr_peak"] == 1e-3 and t12["sgd"]["lr_peak"] == 0.01
    assert TABLES["table7"]["optimizer_settings"]["adam+adax"]["beta2"] == 1e-4
    assert TABLES["table7"]["optimizer_settings"]["adam+adafactor"]["c"] == 0.8
