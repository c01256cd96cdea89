"""make_figures: Figures 1-4 data equal the schedule functions at sample points; run figures are
written (PNG + PDF, non-empty) with one curve per optimizer; Appendix A's smoothing runs forward.

Figure 5 redrawn for the claims_horizon runs: forward smoothing, partial rows labelled as such."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib import pyplot as plt

from scripts import make_figures
from scripts.results_io import find_runs

# ---------------------------------------------------------------- from test_make_figures.py: make_figures: Figures 1-4 data equal the schedule functions at sample points; ru


def _value(curves: dict, key_part: str, t: float) -> float:
    (label,) = [k for k in curves if key_part in k]
    x, y = curves[label]
    (i,) = np.nonzero(x == t)[0]
    return float(y[i])


def test_figure1_to_4_match_the_closed_forms() -> None:
    t = np.array([1, 2, 10, 1000, 62480])
    f1 = make_figures.figure1_data(t)
    for s in t:
        assert _value(f1, "β̂1", s) == pytest.approx((0.9 - 0.9**s) / (1 - 0.9**s), abs=1e-12)
        b = 0.99 ** (1 - 0.99)
        assert _value(f1, "AdamX", s) == pytest.approx((1 - b ** (s - 1)) / (1 - b**s), abs=1e-12)
    f2 = make_figures.figure2_data(t)
    assert len(f2) == 6
    assert _value(f2, "Adam, β2 = 0.999", 1000) == pytest.approx((0.999 - 0.999**1000) / (1 - 0.999**1000))
    f4 = make_figures.figure4_data(t)
    assert len(f4) == 4
    assert _value(f4, "Adafactor", 10) == pytest.approx(1 - 10**-0.8)
    assert _value(f4, "AdaX", 10) == pytest.approx(1 - 1e-4 / ((1 + 1e-4) ** 10 - 1))
    assert _value(f4, "AdamX", 1) == 0.0
    (f3,) = make_figures.figure3_data(total=100, t1=60, peak=1.0, minimum=0.01, points=101).values()
    x, y = f3
    assert y[x == 0][0] == 1.0 and y[x == 30][0] == pytest.approx(1.0 + (0.01 - 1.0) * 0.5)
    assert y[x == 60][0] == pytest.approx(0.01) and y[x == 100][0] == 0.01


def test_smoothing_is_appendix_a_in_forward_order() -> None:
    total = 4000  # step = 10, window = max(5, 0.2) = 5, alpha = 1/3
    df = pd.DataFrame({"step": np.arange(1, total + 1), "loss": np.linspace(5.0, 1.0, total)})
    x, y = make_figures.smooth_loss(df)
    assert x[0] == 1 and x[1] == 11 and len(x) == 400
    ds = df["loss"].to_numpy()[::10]
    # pandas' adjusted EWM with alpha 1/3, written out: weights (1 - alpha)^age over the samples so far
    w = (1 - 1 / 3) ** np.arange(len(ds))[::-1]
    expected = [np.sum(w[-k - 1 :] * ds[: k + 1]) / np.sum(w[-k - 1 :]) for k in range(len(ds))]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert y[0] > y[-1]  # loss decreasing in forward time, not reversed


def _run(root: Path, exp: str, opt: str, seed: int, steps: int = 200, epochs: int = 4) -> None:
    d = root / exp / "m" / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {"experiment_name": exp, "seed": seed, "model": {"name": "m"}, "optimizer": {"name": opt}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(seed)
    loss = np.exp(-np.arange(steps) / 50) + 0.05 * rng.random(steps)
    pd.DataFrame({"step": np.arange(1, steps + 1), "epoch": 1, "loss": loss, "lr": 1e-3, "time": 0.0}).to_csv(
        d / "train.csv", index=False
    )
    with open(d / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "map50", "top1_err", "time"])
        for e in range(1, epochs + 1):
            w.writerow([e, e * steps // epochs, 10.0 * e + seed, 50.0 / e, 0.0])
    (d / "summary.json").write_text(json.dumps({"status": "finished"}))


@pytest.mark.slow
def test_run_figures_written_with_one_curve_per_optimizer(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for opt in ["adam", "adam+adafactor", "adam+adamx"]:
        for seed in (0, 1):
            _run(runs, "table8", opt, seed)
    for opt in ["adam", "adam+adamx"]:
        _run(runs, "table9", opt, 0)
        _run(runs, "table9", opt, 1)
    _run(runs, "table9", "adam+adax", 0)
    found = find_runs(runs)
    loss = make_figures.train_loss_data(found, "table8")
    assert sorted(loss) == ["adam (n=2)", "adam+adafactor (n=2)", "adam+adamx (n=2)"]
    ev = make_figures.eval_curve_data(found, "table9", {"candidates": ["map50"], "scale": 1.0})
    assert sorted(ev) == ["adam (n=2)", "adam+adamx (n=2)", "adam+adax (n=1)"]
    x, y = ev["adam (n=2)"]
    np.testing.assert_allclose(x, [1, 2, 3, 4])
    np.testing.assert_allclose(y, [10.5, 20.5, 30.5, 40.5])  # mean of seeds 0 and 1

    fig = make_figures.plot(ev, "epoch", "mAP", "t")
    assert len(fig.axes[0].get_lines()) == 3
    plt.close(fig)

    out = tmp_path / "figs"
    written = make_figures.make_figures(runs, out)
    names = {p.name for p in written}
    for n in range(1, 7):
        assert {f"figure{n}.png", f"figure{n}.pdf"} <= names
    assert all(p.stat().st_size > 1000 for p in written)
    assert not any("repro" in n for n in names)  # no repro runs, no repro figures


def test_figure_curve_counts() -> None:
    fig = make_figures.plot(make_figures.figure4_data(), "t", "b", "x", logx=True, complement=True)
    assert [len(ax.get_lines()) for ax in fig.axes] == [4, 4]
    plt.close(fig)
    assert math.isclose(make_figures.figure1_data(np.array([1]))["β̂1,t (β1 = 0.9)"][1][0], 0.0)


@pytest.mark.heavy
def test_figure4_says_adax_lies_under_adamx() -> None:
    note = make_figures.figure4_note()
    assert note.startswith("AdaX's curve lies under AdamX's")
    assert "by at most 2.7 %" in note and "t ≤ 62,480" in note  # results/README.md quotes these numbers
    assert "2.7 %" not in make_figures.figure4_note(100)  # computed, not a fixed string
    fig = make_figures.plot(make_figures.figure4_data(), "t", "b", "x", logx=True, complement=True, note=note)
    assert note in [t.get_text() for t in fig.texts]  # the suptitle is a figure text too
    plt.close(fig)


# ---------------------------------------------------------------- from test_claims_figure.py: Figure 5 redrawn for the claims_horizon runs: forward smoothing, partial rows la


def _claims_run(
    root: Path, opt: str, seed: int, losses: np.ndarray, status: str, epochs: int = 0, spe: int = 0
) -> None:
    d = root / "claims_horizon" / "digits_cnn" / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {
        "experiment_name": "claims_horizon",
        "seed": seed,
        "model": {"name": "digits_cnn"},
        "optimizer": {"name": opt},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    steps = np.arange(1, len(losses) + 1)
    pd.DataFrame({"step": steps, "epoch": (steps - 1) // 10 + 1, "loss": losses}).to_csv(
        d / "train.csv", index=False
    )
    (d / "summary.json").write_text(json.dumps({"status": status, "epochs": epochs, "steps_per_epoch": spe}))


def test_finished_rows_are_seed_means_and_partial_rows_say_so(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _claims_run(root, "adamx", 0, np.full(800, 1.0), "finished")
    _claims_run(root, "adamx", 1, np.full(800, 3.0), "finished")
    _claims_run(root, "adam", 0, np.full(800, 5.0), "running", epochs=200, spe=10)  # 800 of 2,000 steps
    _claims_run(root, "adam", 1, np.full(300, 5.0), "failed")
    curves = make_figures.horizon_loss_data(find_runs(root), "claims_horizon")
    assert set(curves) == {"adamx (n=2)", "adam (1 unfinished run, to step 800)"}
    x, y = curves["adamx (n=2)"]
    assert np.allclose(y, 2.0) and x[0] == 1 and x[1] == 3  # 800 // 400 = every 2nd step, forward
    x, _ = curves["adam (1 unfinished run, to step 800)"]
    assert x[1] - x[0] == 5  # downsampled by the planned T = 2,000 // 400, not by the partial log's length


def test_smoothing_runs_forward() -> None:
    df = pd.DataFrame({"step": np.arange(1, 2001), "loss": np.r_[np.full(1000, 1.0), np.full(1000, 0.0)]})
    x, y = make_figures.smooth_loss(df)
    assert x[0] == 1 and np.all(np.diff(x) == 5)
    assert y[0] == 1.0 and y[-1] < 1e-6  # forward: starts at the first loss, ends at the last


# ---------------------------------------------------------------- issue 25: Figure 5 under its own protocol, telemetry figure


def fig5_run(root: Path, exp: str, opt: str, seed: int, sqrt_v: list[float]) -> Path:
    d = root / exp / "digits_cnn" / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {"experiment_name": exp, "seed": seed, "model": {"name": "digits_cnn"}, "optimizer": {"name": opt}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "summary.json").write_text(json.dumps({"status": "finished", "steps_per_epoch": 4}))
    rows = "".join(f"{s},{(s - 1) // 4 + 1},{1.0 / s},1e-3,0\n" for s in range(1, 17))
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n" + rows)
    (d / "full_loss.csv").write_text(
        "step,epoch,full_loss,samples,at\n8,2,0.01,100,eval\n16,4,0.001,100,eval\n"
    )
    head = "step,group,optimizer,numel,lr,weight_decay,beta1_hat,beta2_hat,sqrt_v_q50,m_abs_q50,step_eps\n"
    body = "".join(
        f"{4 * (i + 1)},{g},AdamX,10,1e-3,0.01,0.9,{1 - 10.0 ** -(i + 1)},{v if g == 0 else 99},1e-6,0.001\n"
        for i, v in enumerate(sqrt_v)
        for g in (0, 1)
    )
    (d / "optim.csv").write_text(head + body)
    return d


@pytest.mark.slow
def test_telemetry_curves_are_group_0_medians_over_seeds(tmp_path: Path) -> None:
    fig5_run(tmp_path, "claims_fig5", "adamx", 0, [1.0, 2.0, 3.0, 4.0])
    fig5_run(tmp_path, "claims_fig5", "adamx", 1, [3.0, 2.0, 5.0, 4.0])
    fig5_run(tmp_path, "claims_fig5", "adamx", 2, [2.0, 9.0, 1.0, 4.0])
    fig5_run(tmp_path, "claims_fig5_reset_v", "adamx", 0, [1.0, 1.0, 1.0, 1.0])
    curves = make_figures.telemetry_curves(find_runs(tmp_path))
    assert list(curves) == ["adamx", "adamx, reset_v"]
    med = curves["adamx"]
    assert list(med.index) == [4, 8, 12, 16]
    assert list(med["sqrt_v_q50"]) == [2.0, 2.0, 3.0, 4.0]  # group 1's 99 never enters
    assert list(med["one_minus_beta2_hat"]) == pytest.approx([1e-1, 1e-2, 1e-3, 1e-4])
    assert int(med["n"].iloc[0]) == 3
    points = make_figures.full_loss_points(make_figures.figure5_groups(find_runs(tmp_path))["adamx"])
    assert list(points[0]) == [8.0, 16.0] and list(points[1]) == [0.01, 0.001]
    curve = make_figures.epoch_mean_curve(make_figures.figure5_groups(find_runs(tmp_path))["adamx"])
    assert list(curve[0]) == [4.0, 8.0, 12.0, 16.0]
    assert curve[1][0] == pytest.approx(np.mean([1.0, 1 / 2, 1 / 3, 1 / 4]))
    written = {p.name for p in make_figures.make_figures(tmp_path, tmp_path / "figs")}
    assert {"claims_fig5_figure5.png", "claims_fig5_telemetry.png", "claims_fig5_figure5.pdf"} <= written
