"""make_tables on synthetic run directories with known numbers: means, stds, Welch p-values,
missing cells and the failed-run listing.

make_tables / results_io value by value: every paper cell of Tables 3-12 against the paper's text,
mean ± std and Welch p of every row and column, rounding, row order, runs whose eval.csv ends in NaN,
empty and missing runs, and time to target at its boundaries (>= vs >, <= vs <, not reached)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from scripts import make_tables
from scripts.results_io import best_and_final, find_runs, time_to_target

# ---------------------------------------------------------------- from test_make_tables.py: make_tables on synthetic run directories with known numbers: means, stds, Welch


def write_run(
    root: Path,
    exp: str,
    model: str,
    opt: str,
    seed: int,
    top1: list[float],
    top5: list[float],
    status: str = "finished",
    reason: str | None = None,
) -> Path:
    """A run directory in the trainer's format: config.yaml, eval.csv, train.csv, summary.json."""
    d = root / exp / model / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {
        "experiment_name": exp,
        "seed": seed,
        "model": {"name": model},
        "optimizer": {"name": opt},
        "dataset": {"name": "cifar100", "batch_size": 64},
        "trainer": {"epochs": len(top1)},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(d / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "top1_err", "top5_err", "time"])
        for e, (a, b) in enumerate(zip(top1, top5), start=1):
            w.writerow([e, 10 * e, a, b, 1.0 * e])
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n1,1,2.0,0.001,0.1\n")
    (d / "summary.json").write_text(json.dumps({"status": status, "reason": reason, "wall_time_s": 60.0}))
    return d


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's t and Welch-Satterthwaite df, two-sided p, written out (independent of ttest_ind)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


# best top-1 per seed = min over epochs; final = last epoch
ADAM = {
    0: ([50.0, 40.0, 41.0], [20.0, 15.0, 16.0]),
    1: ([48.0, 42.0, 43.0], [19.0, 16.0, 17.0]),
    2: ([49.0, 44.0, 44.5], [18.0, 17.5, 17.0]),
}
ADAMX = {
    0: ([45.0, 35.0, 36.0], [14.0, 11.0, 12.0]),
    1: ([46.0, 36.0, 35.5], [15.0, 12.0, 12.5]),
    2: ([44.0, 34.0, 34.0], [13.0, 11.5, 11.0]),
}


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, (t1, t5) in ADAM.items():
        write_run(root, "table3", "efficientnetv2_m", "adam", seed, t1, t5)
    for seed, (t1, t5) in ADAMX.items():
        write_run(root, "table3", "efficientnetv2_m", "adamx", seed, t1, t5)
    write_run(
        root,
        "table3",
        "efficientnetv2_m",
        "adam",
        3,
        [90.0],
        [80.0],
        status="failed",
        reason="NaN loss at step 17",
    )
    write_run(root, "table3", "efficientnetv2_m", "adam", 4, [1.0], [1.0], status="running")
    # an ablation run: '+' in the name becomes '_' in the path, config.yaml keeps the registry name
    write_run(root, "table7", "efficientnetv2_m", "adam+adamx", 0, [30.0, 20.0], [10.0, 9.0])
    return root


def test_find_runs_reads_names_from_config(runs: Path) -> None:
    found = find_runs(runs)
    assert len(found) == 9
    assert {r.optimizer for r in found if r.experiment == "table7"} == {"adam+adamx"}
    assert {r.status for r in found} == {"finished", "failed", "running"}


def test_means_stds_and_pvalues(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    written = make_tables.make_tables(runs, out)
    assert {p.name for p in written} >= {"table3.md", "table3.csv", "table3.tex", "table7.md"}
    rows = list(csv.DictReader(open(out / "table3.csv")))
    cell = {(r["optimizer"], r["metric"], r["which"]): r for r in rows}

    adam_best = [min(v[0]) for v in ADAM.values()]  # 40, 42, 44
    adamx_best = [min(v[0]) for v in ADAMX.values()]  # 35, 35.5, 34
    adam_final = [v[0][-1] for v in ADAM.values()]
    adamx_final = [v[0][-1] for v in ADAMX.values()]
    c = cell["adam", "top1_err", "best"]
    assert float(c["mean"]) == pytest.approx(42.0)
    assert float(c["std"]) == pytest.approx(2.0)  # sample std of 40, 42, 44
    assert c["n"] == "3"  # the failed and the running run are not counted
    assert float(c["paper"]) == 39.44
    assert float(c["p_vs_reference"]) == pytest.approx(welch_by_hand(adam_best, adamx_best), rel=1e-6)
    f = cell["adam", "top1_err", "final"]
    assert float(f["mean"]) == pytest.approx(np.mean(adam_final))
    assert float(f["p_vs_reference"]) == pytest.approx(welch_by_hand(adam_final, adamx_final), rel=1e-6)
    # each metric at its own best epoch: top-5 best epochs differ from top-1's
    assert float(cell["adam", "top5_err", "best"]["mean"]) == pytest.approx(np.mean([15.0, 16.0, 17.0]))
    assert float(cell["adam", "top1_err", "best_epoch"]["mean"]) == pytest.approx(2.0)
    # the reference row has no p-value; the AdaX row has no runs: empty, not zero
    assert cell["adamx", "top1_err", "best"]["p_vs_reference"] == ""
    assert cell["adax", "top1_err", "best"]["n"] == "0"
    assert cell["adax", "top1_err", "best"]["mean"] == ""


def test_markdown_missing_cells_and_failed_listing(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    make_tables.make_tables(runs, out)
    md = (out / "table3.md").read_text()
    adax_line = next(line for line in md.splitlines() if "[adax]" in line)
    cells = [c.strip() for c in adax_line.strip("|").split("|")]
    assert cells[1] == "—" and cells[3] == "—"  # best and final of AdaX: missing, never 0
    assert cells[5] == "36.35"  # but the paper's value is there
    assert "42.00 ± 2.00 (n=3)" in md
    assert "Failed runs:" in md and "adam seed 3: NaN loss at step 17" in md
    assert "adam seed 4: status running" in md
    tex = (out / "table3.tex").read_text()
    assert r"\begin{tabular}" in tex and r"42.00 $\pm$ 2.00 (n=3)" in tex
    md7 = (out / "table7.md").read_text()
    assert "20.00 (n=1)" in md7 and "34.27" in md7


def test_protocol_is_stated_beside_every_paper_number(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    make_tables.make_tables(runs, out)
    md = (out / "table3.md").read_text()
    head = md.split("\n| Optimizer")[1].splitlines()[0]
    assert head.count("paper†") == 2  # top-1 and top-5 paper columns both carry the mark
    note = next(line for line in md.splitlines() if line.startswith("† paper:"))
    assert "single run, seed 42, deterministic" in note and "+protocol=authors" in note
    assert "ours: mean ± sample std over n seeds (seeds 0,1,2; deterministic mixed or unrecorded)" in note
    rows = list(csv.DictReader(open(out / "table3.csv")))
    for r in rows:  # each CSV line with a paper value names the paper's protocol
        assert (r["paper_protocol"] == "single run, seed 42, deterministic algorithms") == (r["paper"] != "")
    assert r"$^\dagger$" in (out / "table3.tex").read_text()


def test_runs_protocol_reads_seeds_and_determinism(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (42,):
        d = write_run(root, "table3", "efficientnetv2_m", "adamx", seed, [30.0], [10.0])
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["trainer"]["deterministic"] = True
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = make_tables.runs_protocol(find_runs(root))
    assert text == "mean ± sample std over n seeds (seeds 42; deterministic on)"


def test_prefix_and_cli(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "only7"
    assert make_tables.main(["--runs", str(runs), "--out", str(out), "--experiment-prefix", "table7"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "table7.csv",
        "table7.md",
        "table7.tex",
        "table7_tests.csv",
        "table7_tests.md",
    ]
    assert make_tables.main(["--runs", str(tmp_path / "nope"), "--out", str(out)]) == 1


def test_welch_p_needs_two_per_side() -> None:
    a, b = make_tables.Stat([1.0, 2.0, 3.0]), make_tables.Stat([2.0])
    assert math.isnan(make_tables.welch_p(a, b))
    assert make_tables.welch_p(a, make_tables.Stat([4.0, 5.0, 6.5])) < 0.1


def test_small_scale_table_has_no_paper_column(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        d = write_run(root, "repro_schedules", "digits_cnn", "adam+adax", seed, [3.0, 2.0 + seed], [0.0, 0.0])
        (d / "eval.csv").write_text(
            f"epoch,step,top1_err,top5_err,loss\n1,45,3.0,0.0,0.2\n2,90,{2.0 + seed},0.0,0.1\n"
        )
    (root / "repro_schedules" / "NOTES.txt").write_text("Sweep wall time: 1 min\n")
    make_tables.make_tables(root, tmp_path / "t", note=["Hardware: test"])
    md = (tmp_path / "t" / "repro_schedules.md").read_text()
    assert "paper" not in md.split("\n| Optimizer")[1].splitlines()[0]
    assert "2.50 ± 0.71 (n=2)" in md and "0.1000 ± 0.0000 (n=2)" in md and "Hardware: test" in md
    assert "Sweep wall time: 1 min" in md


def test_detection_map_fraction_is_shown_in_percent(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, (m50, m75) in enumerate([(0.50, 0.25), (0.52, 0.27)]):
        d = write_run(root, "table5", "yolov7_tiny", "adamx", seed, [0.0], [0.0])
        (d / "eval.csv").write_text(f"epoch,step,map50,map75\n1,10,0.1,0.05\n2,20,{m50},{m75}\n")
    make_tables.make_tables(root, tmp_path / "t")
    rows = {
        (r["optimizer"], r["metric"], r["which"]): r
        for r in csv.DictReader(open(tmp_path / "t" / "table5.csv"))
    }
    assert float(rows["adamx", "map50", "best"]["mean"]) == pytest.approx(51.0)  # max over epochs, in %
    assert float(rows["adamx", "map75", "final"]["mean"]) == pytest.approx(26.0)
    assert float(rows["adamx", "map50", "best"]["paper"]) == 52.18


# --- time to target (issue 15) -------------------------------------------------------------------------


def ttt_run(root: Path, opt: str, seed: int, top1: list[float], target: dict | None = None) -> Path:
    """A small-scale run of ``exp_ttt`` (evaluated every epoch, 10 steps per epoch), optional config target."""
    d = write_run(root, "exp_ttt", "digits_cnn", opt, seed, top1, [0.0] * len(top1))
    if target is not None:
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["target"] = target
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    return d


TTT_SPEC = {"caption": "ttt", "columns": ["top1_err"], "reference": "adamx", "rows": {}}


def ttt_table(root: Path, spec: dict | None = None) -> make_tables.TableResult:
    metrics = make_tables.load_paper()["metrics"]
    return make_tables.compute_table("exp_ttt", dict(spec or TTT_SPEC), metrics, find_runs(root))


def test_time_to_target_exact_boundary_never_and_nan(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    target = {"metric": "top1_err", "value": 3.0}
    # eval steps 10, 20, 30, 40: seed 0 reaches 3.0 exactly at step 30 (the boundary counts), seed 1
    # at 20, seed 2 never (NaN is no value, 3.01 is not 3.0).
    ttt_run(root, "adamx", 0, [5.0, 3.5, 3.0, 2.0], target)
    ttt_run(root, "adamx", 1, [4.0, 2.9, 3.2, 3.1], target)
    ttt_run(root, "adamx", 2, [float("nan"), 3.01, float("nan"), 3.01], target)
    # adam: two of three never reach it -> "not reached"
    ttt_run(root, "adam", 0, [9.0, 9.0, 2.5, 9.0], target)
    ttt_run(root, "adam", 1, [9.0, 9.0, 9.0, 9.0], target)
    ttt_run(root, "adam", 2, [9.0, 9.0, 9.0, 9.0], target)
    res = ttt_table(root)
    assert res.target == target
    assert sorted(res.steps_to_target["adamx"], key=lambda v: math.inf if v is None else v) == [
        20.0,
        30.0,
        None,
    ]
    # median with the unreached seed as +inf: sorted [20, 30, inf] -> 30
    assert make_tables.median_steps(res.steps_to_target["adamx"]) == 30.0
    head, body = make_tables.table_rows(res, make_tables.load_paper()["metrics"])
    assert head[-1] == "steps to top1_err <= 3 (median, range)"
    cells = {line[0].split("[")[-1].rstrip("]"): line[-1] for line in body}
    assert cells["adamx"] == "30 (20-30), 2/3 reached"
    assert cells["adam"] == "not reached (1/3 reached)"
    csv_text = make_tables.to_csv(res)
    assert 'exp_ttt,adamx,steps_to_top1_err<=3,median,30,,3,,,"30;20;not_reached",' in csv_text
    assert 'exp_ttt,adam,steps_to_top1_err<=3,median,,,3,,,"30;not_reached;not_reached",' in csv_text


def test_time_to_target_even_n_median_and_higher_is_better(tmp_path: Path) -> None:
    assert make_tables.median_steps([10.0, 40.0]) == 25.0
    assert make_tables.median_steps([10.0, None]) is None  # half never reached: no median step
    assert make_tables.median_steps([]) is None
    assert make_tables.fmt_steps([]) == "—"
    import pandas as pd

    from scripts.results_io import first_reaching

    x, y = pd.Series([1, 2, 3]), pd.Series([0.2, 0.5, 0.7])
    assert first_reaching(x, y, 0.5, higher_is_better=True) == 2.0  # mAP-like: >= counts
    assert first_reaching(x, y, 0.5, higher_is_better=False) == 1.0
    assert first_reaching(x, y, 0.8, higher_is_better=True) is None


def test_time_to_target_train_loss_uses_epoch_means(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    d = ttt_run(root, "adamx", 0, [5.0, 4.0, 3.0])
    # epoch 1: steps 1-2 mean 1.0; epoch 2: steps 3-4, one batch at 0.05 but mean 0.525; epoch 3: mean 0.1
    (d / "train.csv").write_text(
        "step,epoch,loss,lr,time\n1,1,1.5,0.1,0\n2,1,0.5,0.1,0\n3,2,1.0,0.1,0\n4,2,0.05,0.1,0\n5,3,0.1,0.1,0\n6,3,0.1,0.1,0\n"
    )
    res = ttt_table(root, {**TTT_SPEC, "target": {"train_loss": 0.1}})
    assert res.steps_to_target["adamx"] == [6.0]  # not step 4 (one lucky batch), the end of epoch 3
    assert res.target_text == "steps to train loss <= 0.1"


def test_no_target_no_column_and_bad_target_is_one_sentence(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    ttt_run(root, "adamx", 0, [5.0, 4.0])
    res = ttt_table(root)
    assert res.target is None and not res.steps_to_target
    head, _ = make_tables.table_rows(res, make_tables.load_paper()["metrics"])
    assert not any("steps to" in h for h in head)
    ttt_run(root, "adam", 0, [5.0, 4.0], target={"metric": "top1", "value": 3})
    with pytest.raises(ValueError, match="declares target .*top1.*write"):
        ttt_table(root)


def test_runs_with_different_targets_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    ttt_run(root, "adamx", 0, [5.0], target={"metric": "top1_err", "value": 3.0})
    ttt_run(root, "adamx", 1, [5.0], target={"metric": "top1_err", "value": 2.0})
    with pytest.raises(ValueError, match="different targets"):
        ttt_table(root)


# --- landmarks and area after a step (issue 15, Figure 5) ------------------------------------------------


def landmark_run(root: Path, opt: str, seed: int, losses: list[float], status: str = "finished") -> None:
    d = write_run(root, "exp_lm", "digits_cnn", opt, seed, [1.0], [0.0], status=status)
    rows = "".join(f"{s},{(s - 1) // 2 + 1},{v},0.1,0\n" for s, v in enumerate(losses, start=1))
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n" + rows)


LM_SPEC = {
    "caption": "lm",
    "columns": ["top1_err"],
    "reference": "adamx",
    "landmarks": [4, 6],
    "landmark_window": 2,
    "auc_after": 4,
    "rows": {"adamx": {"label": "AdamX", "values": {}}, "adam": {"label": "Adam", "values": {}}},
}


def test_landmarks_window_area_and_partial_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    landmark_run(root, "adamx", 0, [9.0, 9.0, 1.0, 3.0, 0.5, 1.5])  # loss@4 = 2.0, loss@6 = 1.0, area = 2.0
    landmark_run(root, "adamx", 1, [9.0, 9.0, 3.0, 5.0, 1.0, 2.0])  # loss@4 = 4.0, loss@6 = 1.5, area = 3.0
    landmark_run(root, "adam", 0, [9.0, 9.0, 2.0, 2.0, 2.0], status="running")  # reached 4, not 6
    landmark_run(root, "adam", 1, [9.0, 9.0, 2.0, 2.0, 2.0, float("nan")], status="failed")  # never counted
    res = make_tables.compute_landmarks("exp_lm", LM_SPEC, find_runs(root))
    assert res.columns == ["loss@4", "loss@6", "area>4"]
    assert res.stats["adamx", "loss@4"].values == [2.0, 4.0]
    assert res.stats["adamx", "loss@6"].values == [1.0, 1.5]
    assert res.stats["adamx", "area>4"].values == [2.0, 3.0]
    assert res.stats["adam", "loss@4"].values == [2.0]
    assert res.stats["adam", "loss@6"].n == 0 and res.stats["adam", "area>4"].n == 0
    assert res.unfinished_used == 1
    md = make_tables.landmarks_markdown(res, [])
    assert "PARTIAL: 1 run(s) still training" in md
    assert "| AdamX [adamx] | 3 ± 1.4 (n=2) | ref |" in md


def test_landmark_area_needs_every_step_finite() -> None:
    import pandas as pd

    from scripts.results_io import train_loss_area, train_loss_at

    df = pd.DataFrame({"step": [1, 2, 3, 5], "loss": [1.0, 1.0, 1.0, 1.0]})
    assert math.isnan(train_loss_area(df, 2, 5))  # step 4 missing
    df = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [1.0, float("nan"), 1.0, 1.0]})
    assert math.isnan(train_loss_area(df, 1, 4))
    assert train_loss_area(df, 2, 4) == 2.0
    assert math.isnan(train_loss_at(df, 5, 2))  # not reached
    assert train_loss_at(df, 4, 2) == 1.0


# ---------------------------------------------------------------- from test_tables_exact.py: make_tables / results_io value by value: every paper cell of Tables 3-12 against


METRICS = make_tables.load_paper()["metrics"]

# Typed from the paper's text (Sections 5-6), row by row in the paper's order: {table: [(row, label, values)]}.
PAPER = {
    "table3": [("adam", (39.44, 14.76)), ("adax", (36.35, 12.99)), ("adamx", (34.27, 11.40))],
    "table4": [("adam", (40.05, 14.80)), ("adax", (39.97, 15.07)), ("adamx", (39.42, 14.68))],
    "table5": [("adam", (52.07, 27.45)), ("adax", (51.99, 27.19)), ("adamx", (52.18, 28.21))],
    "table6": [("adam", (34.43,)), ("adax", (37.23,)), ("adamx", (37.81,))],
    "table7": [
        ("adam", (39.44, 14.76)),
        ("adam+adafactor", (41.22, 15.23)),
        ("adam+adax", (35.22, 11.92)),
        ("adam+adamx", (34.27, 11.40)),
    ],
    "table8": [
        ("adam", (40.05, 14.80)),
        ("adam+adafactor", (40.64, 15.05)),
        ("adam+adax", (39.64, 14.50)),
        ("adam+adamx", (39.42, 14.68)),
    ],
    "table9": [
        ("adam", (52.07, 27.45)),
        ("adam+adafactor", (45.50, 21.63)),
        ("adam+adax", (51.74, 27.24)),
        ("adam+adamx", (52.18, 28.21)),
    ],
    "table10": [
        ("adam", (34.43,)),
        ("adam+adafactor", (31.76,)),
        ("adam+adax", (36.37,)),
        ("adam+adamx", (37.81,)),
    ],
    "table11": [
        ("sgd", (39.03, 16.19)),
        ("radam", (36.12, 12.66)),
        ("lion", (41.33, 17.03)),
        ("sophiag", (41.01, 15.42)),
        ("adamx", (35.66, 12.37)),
    ],
    "table12": [
        ("sgd", (63.83, 33.66)),
        ("radam", (35.45, 11.95)),
        ("lion", (35.60, 12.54)),
        ("sophiag", (37.39, 13.48)),
        ("adamx", (32.87, 10.72)),
    ],
}
COLUMNS = {  # the paper's column order per table
    **{t: ["top1_err", "top5_err"] for t in ("table3", "table4", "table7", "table8", "table11", "table12")},
    **{t: ["map50", "map75"] for t in ("table5", "table9")},
    **{t: ["miou"] for t in ("table6", "table10")},
}
REFERENCE = {t: ("adam+adamx" if t in ("table7", "table8", "table9", "table10") else "adamx") for t in PAPER}


def write_exact_run(
    root: Path,
    exp: str,
    opt: str,
    seed: int,
    evals: dict[str, list[float]] | None,
    status: str | None = "finished",
    with_step: bool = True,
    summary_extra: dict | None = None,
) -> Path:
    """A run directory: config.yaml, eval.csv with the columns ``evals`` (one row per epoch, 10 steps each;
    None = no eval.csv), summary.json with ``status`` (None = no summary.json)."""
    d = root / exp / "m" / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {"experiment_name": exp, "seed": seed, "model": {"name": "m"}, "optimizer": {"name": opt}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if evals is not None:
        n = len(next(iter(evals.values())))
        frame = {"epoch": list(range(1, n + 1))}
        if with_step:
            frame["step"] = [10 * e for e in range(1, n + 1)]
        pd.DataFrame({**frame, **evals}).to_csv(d / "eval.csv", index=False)
    if status is not None:
        (d / "summary.json").write_text(
            json.dumps({"status": status, "reason": None, **(summary_extra or {})})
        )
    return d


def md_rows(md: str) -> dict[str, list[str]]:
    """Markdown table body: row key (the [name]) -> its cells."""
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and "[" in line and not line.startswith("| Optimizer"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[cells[0].rsplit("[", 1)[1].rstrip("]")] = cells
    return out


def md_head(md: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith("| Optimizer"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# --- every paper cell of every table ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_tables(tmp_path_factory) -> Path:
    """One finished run of each table's reference row, tabulated once."""
    root = tmp_path_factory.mktemp("paper_runs")
    evals = {"top1_err": [30.0], "top5_err": [10.0], "map50": [0.5], "map75": [0.25], "miou": [40.0]}
    for table in PAPER:
        write_exact_run(root, table, REFERENCE[table], 0, evals)
    out = root.parent / "tables"
    make_tables.make_tables(root, out)
    return out


def test_paper_yaml_holds_every_paper_value():
    """A mistyped paper value in any row or column of results/paper.yaml (all 69 cells)."""
    tables = make_tables.load_paper()["tables"]
    n = 0
    for table, rows in PAPER.items():
        spec = tables[table]
        assert spec["columns"] == COLUMNS[table] and spec["reference"] == REFERENCE[table]
        assert [r for r, _ in rows] == list(spec["rows"])
        for row, values in rows:
            assert [spec["rows"][row]["values"][c] for c in COLUMNS[table]] == list(values), (table, row)
            n += len(values)
    assert n == 18 + 3 + 24 + 4 + 20  # 69 cells


@pytest.mark.parametrize("table", list(PAPER))
def test_every_paper_column_in_markdown_and_csv(all_tables, table):
    """A paper column taken from the wrong row or metric, rounded, or shown for only the first column."""
    md = (all_tables / f"{table}.md").read_text()
    head = md_head(md)
    expected_head = ["Optimizer"]
    for col in COLUMNS[table]:
        label = METRICS[col]["label"]
        expected_head += [f"{label} best", "p best", f"{label} final", "p final", f"{label} paper†"]
    assert head == expected_head
    rows = md_rows(md)
    assert list(rows) == [r for r, _ in PAPER[table]]  # the paper's row order
    for row, values in PAPER[table]:
        paper_cells = [rows[row][1 + 5 * k + 4] for k in range(len(values))]
        assert paper_cells == [f"{v:.2f}" for v in values], (table, row)
    lines = list(csv.DictReader(open(all_tables / f"{table}.csv")))
    for row, values in PAPER[table]:
        for col, v in zip(COLUMNS[table], values):
            got = {r["which"]: r["paper"] for r in lines if r["optimizer"] == row and r["metric"] == col}
            assert got == {"best": str(v), "final": str(v), "best_epoch": ""}, (table, row, col)
            assert float(got["best"]) == v


@pytest.mark.parametrize("table", list(PAPER))
def test_reference_run_lands_in_its_own_row_and_unit(all_tables, table):
    """The run counted in another row, or mAP not scaled to percent (0.5 -> 50.00, 0.25 -> 25.00)."""
    rows = md_rows((all_tables / f"{table}.md").read_text())
    ours = {"top1_err": "30.00", "top5_err": "10.00", "map50": "50.00", "map75": "25.00", "miou": "40.00"}
    for row, _ in PAPER[table]:
        cells = rows[row]
        for k, col in enumerate(COLUMNS[table]):
            best, p_best, final, p_final = cells[1 + 5 * k : 5 + 5 * k]
            if row == REFERENCE[table]:
                assert (best, p_best, final, p_final) == (
                    f"{ours[col]} (n=1)",
                    "ref",
                    f"{ours[col]} (n=1)",
                    "ref",
                )
            else:
                assert (best, p_best, final, p_final) == ("—", "—", "—", "—")


# --- means, stds, Welch p of every row and column ------------------------------------------------------

# table6 (mIoU, higher is better), per seed per epoch; best = max over epochs, final = last epoch.
T6 = {
    "adamx": {0: [30.0, 38.0, 37.0], 1: [31.0, 36.0, 36.5], 2: [29.0, 37.5, 38.5], 3: [32.0, 39.0, 35.0]},
    "adam": {0: [20.0, 33.0, 31.0], 1: [22.0, 35.0, 34.0]},
    "adax": {0: [25.0, 36.0, 36.0], 1: [26.0, 37.0, 35.0], 2: [27.0, 37.0, 37.0]},
}


def welch_exact(a: list[float], b: list[float]) -> float:
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


@pytest.fixture(scope="module")
def t6(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("t6runs")
    for opt, seeds in T6.items():
        for seed, miou in seeds.items():
            write_exact_run(root, "table6", opt, seed, {"miou": miou})
    out = root.parent / "t6tables"
    make_tables.make_tables(root, out)
    return out


def test_every_row_mean_std_p_best_and_final(t6):
    """std with ddof 0, best as min for a higher-is-better metric, final not the last epoch, Student's t
    instead of Welch's, or the p-value taken against the wrong row (unequal n: 2, 3 vs 4)."""
    lines = {(r["optimizer"], r["which"]): r for r in csv.DictReader(open(t6 / "table6.csv"))}
    ref_best = [max(v) for v in T6["adamx"].values()]  # 38, 36.5, 38.5, 39
    ref_final = [v[-1] for v in T6["adamx"].values()]  # 37, 36.5, 38.5, 35
    for opt, seeds in T6.items():
        best = [max(v) for v in seeds.values()]
        final = [v[-1] for v in seeds.values()]
        epochs = [float(v.index(max(v)) + 1) for v in seeds.values()]
        for which, vals in (("best", best), ("final", final), ("best_epoch", epochs)):
            line = lines[opt, which]
            assert line["n"] == str(len(vals))
            assert float(line["mean"]) == pytest.approx(sum(vals) / len(vals), rel=1e-9)
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
            assert float(line["std"]) == pytest.approx(std, rel=1e-9)
            assert [float(x) for x in line["values"].split(";")] == vals
        for which, vals, ref in (("best", best, ref_best), ("final", final, ref_final)):
            p = lines[opt, which]["p_vs_reference"]
            if opt == "adamx":
                assert p == ""
            else:
                assert float(p) == pytest.approx(welch_exact(vals, ref), rel=1e-6)
                assert float(p) != pytest.approx(stats.ttest_ind(vals, ref).pvalue, rel=1e-3)


def test_markdown_cells_are_the_rounded_stats(t6):
    """A cell rounded to other digits, p formatted wrongly, or best and final swapped in the markdown."""
    rows = md_rows((t6 / "table6.md").read_text())
    # adam: best 33, 35 -> 34.00 ± 1.41; final 31, 34 -> 32.50 ± 2.12
    p_b = welch_exact([33.0, 35.0], [38.0, 36.5, 38.5, 39.0])
    p_f = welch_exact([31.0, 34.0], [37.0, 36.5, 38.5, 35.0])
    assert rows["adam"][1:6] == [
        "34.00 ± 1.41 (n=2)",
        f"{p_b:.2g}",
        "32.50 ± 2.12 (n=2)",
        f"{p_f:.2g}",
        "34.43",
    ]
    # adamx: best 38, 36.5, 38.5, 39 -> 38.00 ± 1.08; final 37, 36.5, 38.5, 35 -> 36.75 ± 1.44
    assert rows["adamx"][1:6] == ["38.00 ± 1.08 (n=4)", "ref", "36.75 ± 1.44 (n=4)", "ref", "37.81"]
    assert rows["adax"][1] == "36.67 ± 0.58 (n=3)" and rows["adax"][3] == "36.00 ± 1.00 (n=3)"


def test_fmt_p_and_fmt_stat_boundaries():
    """The switch to scientific notation at the wrong p (1e-3 stays 0.001), or digits ignored."""
    assert make_tables.fmt_p(1e-3) == "0.001"
    assert make_tables.fmt_p(0.00099) == "9.9e-04"
    assert make_tables.fmt_p(0.04567) == "0.046"
    assert make_tables.fmt_p(1.0) == "1"
    assert make_tables.fmt_p(math.nan) == "—" and make_tables.fmt_p(None) == "—"
    assert make_tables.fmt_stat(make_tables.Stat([1.0, 2.0])) == "1.50 ± 0.71 (n=2)"
    assert make_tables.fmt_stat(make_tables.Stat([0.12345678]), 4) == "0.1235 (n=1)"
    assert make_tables.fmt_stat(make_tables.Stat([])) == "—"
    assert make_tables.fmt_paper({"rows": {"a": {"values": {"x": 11.4}}}}, "a", "x") == "11.40"


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the zero-spread sample
def test_welch_p_needs_spread_and_two_per_side():
    """A p-value reported for constant samples (no spread on both sides) or for n = 1."""
    S = make_tables.Stat
    assert math.isnan(make_tables.welch_p(S([2.0, 2.0]), S([3.0, 3.0])))
    assert math.isnan(make_tables.welch_p(S([1.0]), S([3.0, 4.0])))
    # one side constant: t = (2 - 3.5) / sqrt(0 + 0.5 / 2) = -3, df = 0.25^2 / (0.25^2 / 1) = 1
    one_sided_spread = make_tables.welch_p(S([2.0, 2.0]), S([3.0, 4.0]))
    assert one_sided_spread == pytest.approx(2 * stats.t.sf(3.0, 1), rel=1e-9)


# --- NaN tails, best epoch, empty and missing runs -------------------------------------------------------

TOP1 = {**METRICS["top1_err"]}
MAP50 = {**METRICS["map50"]}


def test_best_and_final_with_a_nan_tail_and_gaps():
    """A diverged run's NaN taken as its best or hidden behind an earlier final; the best epoch read from
    the row index instead of the epoch column; ties not resolved to the first epoch."""
    df = pd.DataFrame({"epoch": [2, 4, 6, 8], "top1_err": [50.0, 38.0, 38.0, float("nan")]})
    best, epoch, final = best_and_final(df, TOP1)
    assert (best, epoch) == (38.0, 4.0) and math.isnan(final)
    df = pd.DataFrame({"epoch": [1, 2, 3], "map50": [0.30, float("nan"), 0.25]})
    assert best_and_final(df, MAP50) == (30.0, 1.0, 25.0)
    assert best_and_final(pd.DataFrame({"epoch": [1, 2], "top1_err": [float("nan")] * 2}), TOP1) is None
    assert best_and_final(pd.DataFrame({"epoch": [1], "other": [1.0]}), TOP1) is None


def test_table_with_diverged_empty_and_missing_runs(tmp_path):
    """A NaN final averaged in (or the diverged run's best dropped), an empty eval.csv crashing the table
    or counted as 0, a run without summary.json counted as finished."""
    root = tmp_path / "runs"
    write_exact_run(root, "table3", "adamx", 0, {"top1_err": [40.0, 35.0], "top5_err": [12.0, 11.0]})
    write_exact_run(root, "table3", "adamx", 1, {"top1_err": [41.0, 37.0], "top5_err": [13.0, 12.0]})
    # diverged: best 36 at epoch 2, final NaN
    write_exact_run(
        root, "table3", "adamx", 2, {"top1_err": [44.0, 36.0, float("nan")], "top5_err": [14, 12.5, 99]}
    )
    d = write_exact_run(root, "table3", "adax", 0, {"top1_err": [1.0]})
    (d / "eval.csv").write_text("epoch,step,top1_err,top5_err\n")  # header only: never evaluated
    write_exact_run(root, "table3", "adax", 1, None)  # no eval.csv at all
    write_exact_run(
        root, "table3", "adam", 0, {"top1_err": [10.0], "top5_err": [5.0]}, status=None
    )  # no summary
    res = make_tables.compute_table(
        "table3", make_tables.table_specs(make_tables.load_paper())["table3"], METRICS, find_runs(root)
    )
    assert res.best["adamx", "top1_err"].values == [35.0, 37.0, 36.0]
    assert res.best_epoch["adamx", "top1_err"].values == [2.0, 2.0, 2.0]
    assert res.final["adamx", "top1_err"].values == [35.0, 37.0]  # the NaN final is not a number to average
    assert res.final["adamx", "top5_err"].values == [11.0, 12.0, 99.0]  # top-5 did not diverge
    assert res.best["adax", "top1_err"].n == 0 and res.best["adam", "top1_err"].n == 0
    assert [r.optimizer for r in res.unfinished] == ["adam"] and res.unfinished[0].status == "unknown"
    rows = md_rows(make_tables.to_markdown(res, METRICS, []))
    assert rows["adamx"][1] == "36.00 ± 1.00 (n=3)" and rows["adamx"][3] == "36.00 ± 1.41 (n=2)"
    assert rows["adax"][1:5] == ["—", "—", "—", "—"] and rows["adax"][5] == "36.35"
    assert "adam seed 0: status unknown" in make_tables.to_markdown(res, METRICS, [])


def test_unknown_optimizer_row_is_appended_after_the_paper_rows(tmp_path):
    """A run of an optimizer outside the table dropped, or the paper's row order disturbed."""
    root = tmp_path / "runs"
    write_exact_run(root, "table6", "lion", 0, {"miou": [20.0]})
    write_exact_run(root, "table6", "adamx", 0, {"miou": [30.0]})
    res = make_tables.compute_table(
        "table6", make_tables.load_paper()["tables"]["table6"], METRICS, find_runs(root)
    )
    assert res.rows == ["adam", "adax", "adamx", "lion"]
    assert list(md_rows(make_tables.to_markdown(res, METRICS, []))) == ["adam", "adax", "adamx", "lion"]


# --- time to target --------------------------------------------------------------------------------------


def _run_for(root: Path, evals: dict, **kw):
    write_exact_run(root, "exp", "adamx", 0, evals, **kw)
    return find_runs(root)[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50.0, 20.0), (49.99, 20.0), (50.01, 30.0), (60.0, 30.0), (60.01, None)],
)
def test_time_to_target_higher_is_better_in_paper_units(tmp_path, value, expected):
    """mAP compared unscaled (fraction vs percent), > where the target counts at equality, or the step
    of the evaluation after (or before) the one that reached it."""
    run = _run_for(tmp_path, {"map50": [0.30, 0.50, 0.60]})  # steps 10, 20, 30: 30 %, 50 %, 60 %
    assert time_to_target(run, {"metric": "map50", "value": value}, METRICS) == expected


@pytest.mark.parametrize(("value", "expected"), [(3.0, 1562.0), (2.99, None), (5.0, 781.0)])
def test_time_to_target_without_step_column_uses_epoch_times_steps(tmp_path, value, expected):
    """An eval.csv without a step column: the step is epoch x steps_per_epoch (781 on CIFAR-100)."""
    run = _run_for(
        tmp_path, {"top1_err": [5.0, 3.0, 3.5]}, with_step=False, summary_extra={"steps_per_epoch": 781}
    )
    assert time_to_target(run, {"metric": "top1_err", "value": value}, METRICS) == expected


@pytest.mark.parametrize(("value", "expected"), [(0.25, 4.0), (0.2499, None), (0.75, 2.0), (0.7499, 4.0)])
def test_time_to_target_train_loss_epoch_mean_exactly_at_target(tmp_path, value, expected):
    """The epoch-mean loss equal to the target not counted (<= is the rule), or a single batch counted."""
    run = _run_for(tmp_path, {"top1_err": [1.0]})
    (run.path / "train.csv").write_text(
        "step,epoch,loss,lr,time\n1,1,1.0,0.1,0\n2,1,0.5,0.1,0\n3,2,0.125,0.1,0\n4,2,0.375,0.1,0\n"
    )  # epoch means 0.75 (ends at step 2), 0.25 (ends at step 4); one batch at 0.125
    assert time_to_target(run, {"train_loss": value}, METRICS) == expected


def test_time_to_target_missing_logs_are_not_reached(tmp_path):
    """A run without eval.csv / train.csv reported as reaching at step 0 instead of not at all."""
    run = _run_for(tmp_path, None)
    assert time_to_target(run, {"metric": "top1_err", "value": 100.0}, METRICS) is None
    assert time_to_target(run, {"train_loss": 100.0}, METRICS) is None


def test_steps_median_and_text():
    """The median with unreached seeds as +inf, the spread over reached seeds only, thousands separators."""
    assert make_tables.median_steps([10.0, 20.0, None, 40.0]) == 30.0  # sorted 10, 20, 40, inf
    assert make_tables.median_steps([10.0, 40.0, None, None]) is None  # (40 + inf) / 2
    assert make_tables.median_steps([None, 7.0, 5.0]) == 7.0
    assert make_tables.fmt_steps([1000.0, 2000.0, 1500.0]) == "1,500 (1,000-2,000), 3/3 reached"
    assert make_tables.fmt_steps([30.0]) == "30, 1/1 reached"
    assert make_tables.fmt_steps([12500.0, None, 10000.0]) == "12,500 (10,000-12,500), 2/3 reached"
    assert make_tables.fmt_steps([None, None]) == "not reached (0/2 reached)"
    assert make_tables.target_label({"metric": "map50", "value": 50}, METRICS) == "steps to map50 >= 50"
    assert make_tables.target_label({"train_loss": 0.001}, METRICS) == "steps to train loss <= 0.001"


# --- run directories read from the path, landmarks CSV ---------------------------------------------------


def test_run_names_from_the_path_when_config_is_missing(tmp_path):
    """A copied-in run without config.yaml filed under the wrong experiment, model, optimizer or seed (path
    parts off by one, '_' not turned back into '+'); Hydra's own .hydra folder taken for a run."""
    d = tmp_path / "runs" / "table7" / "efficientnetv2_m" / "adam_adamx" / "seed3"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": "finished"}))
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text("seed: 99\n")
    bad = tmp_path / "runs" / "table7" / "efficientnetv2_m" / "adam" / "seed0"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text("{not json")
    runs = find_runs(tmp_path / "runs")
    assert [(r.experiment, r.model, r.optimizer, r.seed, r.status) for r in runs] == [
        ("table7", "efficientnetv2_m", "adam", 0, "unknown"),
        ("table7", "efficientnetv2_m", "adam+adamx", 3, "finished"),
    ]
    assert runs[0].reason == "summary.json is not valid JSON"


def test_landmarks_csv_every_cell(tmp_path):
    """A landmark window shifted by one step, the area's start step included, or a p-value in the wrong row."""
    root = tmp_path / "runs"
    spec = {**LM_SPEC, "landmarks": [3, 5], "auc_after": 3}  # test_make_tables' spec, other landmarks
    losses = {
        ("adamx", 0): [8.0, 4.0, 2.0, 1.0, 0.5],  # loss@3 = (4 + 2) / 2 = 3, loss@5 = 0.75, area>3 = 1.5
        ("adamx", 1): [8.0, 6.0, 2.0, 2.0, 1.0],  # 4, 1.5, 3
        ("adam", 0): [8.0, 8.0, 4.0, 2.0, 2.0],  # 6, 2, 4
        ("adam", 1): [8.0, 8.0, 6.0, 4.0, 2.0],  # 7, 3, 6
    }
    for (opt, seed), loss in losses.items():
        d = write_exact_run(root, "exp_lm", opt, seed, {"top1_err": [1.0]})
        (d / "train.csv").write_text(
            "step,epoch,loss\n" + "".join(f"{s},1,{v}\n" for s, v in enumerate(loss, start=1))
        )
    res = make_tables.compute_landmarks("exp_lm", spec, find_runs(root))
    lines = {
        (r["optimizer"], r["quantity"]): r
        for r in csv.DictReader(make_tables.landmarks_csv(res).splitlines())
    }
    expected = {
        "adamx": {"loss@3": [3.0, 4.0], "loss@5": [0.75, 1.5], "area>3": [1.5, 3.0]},
        "adam": {"loss@3": [6.0, 7.0], "loss@5": [2.0, 3.0], "area>3": [4.0, 6.0]},
    }
    for opt, cols in expected.items():
        for col, vals in cols.items():
            line = lines[opt, col]
            assert [float(v) for v in line["values"].split(";")] == vals
            assert float(line["mean"]) == sum(vals) / 2 and line["n"] == "2"
            if opt == "adamx":
                assert line["p_vs_reference"] == ""
            else:
                ref = expected["adamx"][col]
                # issue 25: landmark losses and areas span decades, so their Welch test runs on log10
                logs, log_ref = [math.log10(v) for v in vals], [math.log10(v) for v in ref]
                assert float(line["p_vs_reference"]) == pytest.approx(welch_exact(logs, log_ref), rel=1e-6)


# ---------------------------------------------------------------- issue 25: epoch-aligned landmarks, float64 full-batch
# losses, the area's trend and spikes, and the tests file (Holm families, verdicts), from hand-made runs

FIG5_SPEC = {
    "caption": "fig5",
    "columns": ["top1_err"],
    "reference": "adamx",
    "landmarks": [6, 8],
    "landmark_window": "epoch",
    "auc_after": 4,
    "trend_window": 3,
    "claims": {"full-batch float64 loss": {"adam": "higher"}},
    "rows": {"adamx": {"label": "AdamX", "values": {}}, "adam": {"label": "Adam", "values": {}}},
}


def fig5_run(root: Path, opt: str, seed: int, losses: list[float], full: dict[int, float]) -> Path:
    """4 steps per epoch; full_loss.csv with the float64 full-batch loss at the given steps."""
    d = write_exact_run(
        root, "exp_f5", opt, seed, {"top1_err": [1.0 + seed]}, summary_extra={"steps_per_epoch": 4}
    )
    rows = "".join(f"{s},{(s - 1) // 4 + 1},{v},0.1,0\n" for s, v in enumerate(losses, start=1))
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n" + rows)
    body = "".join(f"{s},{(s - 1) // 4 + 1},{v!r},100,landmark\n" for s, v in full.items())
    (d / "full_loss.csv").write_text("step,epoch,full_loss,samples,at\n" + body)
    return d


def test_epoch_window_full_loss_and_area_split(tmp_path: Path) -> None:
    # step 6 lies in epoch 2 (steps 5-8): its window is that whole epoch, not steps 5-6 or 3-6
    losses = [9.0, 9.0, 9.0, 9.0, 1.0, 2.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    fig5_run(tmp_path, "adamx", 0, losses, {6: 1e-3, 8: 1e-4})
    fig5_run(tmp_path, "adamx", 1, losses, {6: 2e-3, 8: 2e-4})
    fig5_run(tmp_path, "adam", 0, losses, {6: 1e-6, 8: 1e-8})
    fig5_run(tmp_path, "adam", 1, losses, {6: 3e-6})  # seed 1 never logged step 8: n = 1 there
    res = make_tables.compute_landmarks("exp_f5", FIG5_SPEC, find_runs(tmp_path))
    assert res.columns == ["loss@6", "loss@8", "area>4", "area>4 trend", "area>4 spikes", "full@6", "full@8"]
    assert res.stats["adamx", "loss@6"].values == [2.0, 2.0]  # (1 + 2 + 3 + 2) / 4
    assert res.stats["adamx", "loss@8"].values == [2.0, 2.0]
    # steps 5-8 = 1, 2, 3, 2: running median over 3 (ends repeated) = 1, 2, 2, 2 -> trend 7, spikes 1
    assert res.stats["adamx", "area>4"].values == [8.0, 8.0]
    assert res.stats["adamx", "area>4 trend"].values == [7.0, 7.0]
    assert res.stats["adamx", "area>4 spikes"].values == [1.0, 1.0]
    assert res.stats["adam", "full@6"].values == [1e-6, 3e-6]
    assert res.stats["adam", "full@8"].values == [1e-8]
    p = stats.ttest_ind(np.log10([1e-6, 3e-6]), np.log10([1e-3, 2e-3]), equal_var=False).pvalue
    assert res.p["adam", "full@6"] == pytest.approx(p, rel=1e-12)
    comps = make_tables.landmark_comparisons(res)
    full6 = next(c for c in comps if c.quantity == "full@6")
    assert full6.family == "full-batch float64 loss" and full6.claim == "higher"
    # the claim says higher, the row is ~800x lower (p = 0.016, a family of one: full@8 has n = 1 for adam)
    assert full6.p_welch_holm == full6.p_welch and full6.eff.high < 0
    assert full6.verdict == "contradicted"
    assert full6.eff.estimate == pytest.approx(
        np.mean(np.log10([1e-6, 3e-6])) - np.mean(np.log10([1e-3, 2e-3]))
    )


def test_tests_file_states_each_family_and_the_clean_column(tmp_path: Path) -> None:
    spec = {**FIG5_SPEC, "clean": "final", "claims": {"top1_err final": {"adam": "higher"}}}
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(1.0, 3.0), (1.5, 3.5), (1.2, 3.1)]):
        write_exact_run(root, "exp_t", "adamx", seed, {"top1_err": [2.0, a]})
        write_exact_run(root, "exp_t", "adam", seed, {"top1_err": [0.5, b]})
    res = make_tables.compute_table("exp_t", {**spec, "landmarks": None}, METRICS, find_runs(root))
    comps = make_tables.table_comparisons(res)
    fams = [c.family for c in comps]
    assert fams == ["top1_err final (clean)", "top1_err best (epoch picked on the test set: optimistic)"]
    final = comps[0]
    assert final.values == [3.0, 3.5, 3.1] and final.reference == [1.0, 1.5, 1.2]
    want = stats.ttest_ind([3.0, 3.5, 3.1], [1.0, 1.5, 1.2], equal_var=False).pvalue  # linear scale: errors
    assert final.p_welch == pytest.approx(want, rel=1e-12)
    assert final.verdict == "supported"  # the claim predicts higher error for Adam: it is, clearly
    paths = make_tables.write_tests(tmp_path / "out", "exp_t", spec, comps, [])
    md = paths[0].read_text()
    assert "The final-epoch column is the clean comparison" in md
    assert "top1_err final (clean) (1 tests)" in md


def test_tests_from_committed_csv_reproduce_the_runs_tests(tmp_path: Path) -> None:
    """The same numbers from a table's per-seed CSV values as from its run directories."""
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(1.0, 3.0), (1.5, 3.5), (1.2, 3.1)]):
        write_exact_run(
            root, "claims_tuned", "adamx", seed, {"top1_err": [2.0, a], "loss": [0.1, 0.05 * (seed + 1)]}
        )
        write_exact_run(
            root, "claims_tuned", "adam", seed, {"top1_err": [0.5, b], "loss": [0.2, 0.5 * (seed + 1)]}
        )
    out = tmp_path / "tables"
    make_tables.make_tables(root, out, "claims_tuned")
    from_runs = (out / "claims_tuned_tests.csv").read_text()
    (out / "claims_tuned_tests.csv").unlink()
    assert make_tables.main(["--from-csv", str(out), "--experiment-prefix", "claims_tuned"]) == 0
    from_csv = (out / "claims_tuned_tests.csv").read_text()
    # per-seed values are stored at 10 significant digits, so the p-values agree to ~1e-9, not bit for bit
    a, b = (list(csv.DictReader(t.splitlines())) for t in (from_runs, from_csv))
    assert [(r["family"], r["row"], r["verdict"]) for r in a] == [
        (r["family"], r["row"], r["verdict"]) for r in b
    ]
    for ra, rb in zip(a, b):
        assert float(ra["p_welch_holm"]) == pytest.approx(float(rb["p_welch_holm"]), rel=1e-8)
        assert float(ra["p_mw"]) == pytest.approx(float(rb["p_mw"]), rel=1e-12)
    # the test loss spans decades between seeds: its Welch test runs on log10, top-1 error on the values
    loss = next(r for r in a if r["quantity"] == "loss" and r["family"].startswith("loss final"))
    assert loss["scale"] == "log10"
    want = stats.ttest_ind(np.log10([0.5, 1.0, 1.5]), np.log10([0.05, 0.1, 0.15]), equal_var=False).pvalue
    assert float(loss["p_welch"]) == pytest.approx(want, rel=1e-8)
    assert next(r for r in a if r["quantity"] == "top1_err")["scale"] == "linear"


# ---------------------------------------------------------------- the landmark tables' own steps (default arguments)


def _epoch_run(root: Path, exp: str, opt: str, last_step: int, losses: list[float]) -> None:
    """A run at 44 steps per epoch whose train.csv holds the epoch ending at ``last_step`` (the window of
    every landmark in that epoch) with the given per-step losses."""
    d = write_exact_run(
        root,
        exp,
        opt,
        0,
        {"top1_err": [3.0], "loss": [0.1]},
        "running",
        summary_extra={"steps_per_epoch": 44},
    )
    steps = range(last_step - 43, last_step + 1)
    body = "".join(f"{s},{(s - 1) // 44 + 1},{v},0.1,0\n" for s, v in zip(steps, losses, strict=True))
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n" + body)


def _landmark_cells(path: Path, optimizer: str) -> dict[str, tuple[str, str]]:
    return {
        r["quantity"]: (r["mean"], r["n"]) for r in csv.DictReader(path.open()) if r["optimizer"] == optimizer
    }


def test_claims_fig5_landmarks_default_to_the_papers_steps(tmp_path: Path) -> None:
    """claims_fig5: loss at 19,344, 37,488, 41,976, 46,376 and 62,480 and the area after 19,344; 19,344
    lies in the epoch of steps 19,317-19,360 at 44 steps per epoch."""
    _epoch_run(tmp_path / "runs", "claims_fig5", "adamx", 19360, [1.0] * 22 + [3.0] * 22)
    make_tables.make_tables(tmp_path / "runs", tmp_path / "out")
    cells = _landmark_cells(tmp_path / "out" / "claims_fig5_landmarks.csv", "adamx")
    assert list(cells) == [
        "loss@19344",
        "loss@37488",
        "loss@41976",
        "loss@46376",
        "loss@62480",
        "area>19344",
        "area>19344 trend",
        "area>19344 spikes",
    ]
    assert cells["loss@19344"] == ("2", "1") and cells["loss@37488"] == ("", "0")


def test_mechanism_landmarks_default_to_the_restart_and_the_horizon(tmp_path: Path) -> None:
    """claims_fig5_mechanism: loss at 41,976 (the restart), 46,376 and 62,480 (T, the end of epoch 1,420)."""
    _epoch_run(tmp_path / "runs", "claims_fig5_wd0", "adamx", 62480, [0.5] * 44)
    make_tables.make_tables(tmp_path / "runs", tmp_path / "out", experiment_prefix="claims_fig5_mechanism")
    cells = _landmark_cells(tmp_path / "out" / "claims_fig5_mechanism_landmarks.csv", "claims_fig5_wd0:adamx")
    # the log holds only the last epoch: the earlier landmarks' windows have no steps
    assert cells == {"loss@41976": ("", "0"), "loss@46376": ("", "0"), "loss@62480": ("0.5", "1")}


def test_steps_per_epoch_counts_train_csv_when_the_summary_lacks_it(tmp_path: Path) -> None:
    from scripts.results_io import read_run, steps_per_epoch

    d = write_exact_run(tmp_path, "e", "adam", 0, None, "running")
    run = read_run(d)
    assert steps_per_epoch(run) is None  # no train.csv yet
    (d / "train.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    assert steps_per_epoch(run) is None  # no epoch column: cannot be counted
    (d / "train.csv").write_text("step,epoch,loss\n1,1,2.0\n2,1,1.5\n3,1,1.4\n4,2,1.2\n")
    assert steps_per_epoch(run) == 3
    assert steps_per_epoch(run, pd.DataFrame({"epoch": []})) is None
