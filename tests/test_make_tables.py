"""make_tables on synthetic run directories with known numbers: means, stds, Welch p-values,
missing cells and the failed-run listing."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import make_tables  # noqa: E402
from results_io import find_runs  # noqa: E402


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
    assert sorted(p.name for p in out.iterdir()) == ["table7.csv", "table7.md", "table7.tex"]
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
    from results_io import first_reaching

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
    from results_io import train_loss_area, train_loss_at

    df = pd.DataFrame({"step": [1, 2, 3, 5], "loss": [1.0, 1.0, 1.0, 1.0]})
    assert math.isnan(train_loss_area(df, 2, 5))  # step 4 missing
    df = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [1.0, float("nan"), 1.0, 1.0]})
    assert math.isnan(train_loss_area(df, 1, 4))
    assert train_loss_area(df, 2, 4) == 2.0
    assert math.isnan(train_loss_at(df, 5, 2))  # not reached
    assert train_loss_at(df, 4, 2) == 1.0
