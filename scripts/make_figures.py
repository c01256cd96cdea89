"""Figures 1-6 of the paper (PNG + PDF) into results/figures/.

Figures 1-4 are exact curves of ``adamx.schedules`` and ``experiments.train.schedule.linear_to_min``;
Figure 5 is the smoothed training loss of the Table 8 runs, Figure 6 the evaluation curve of the
Table 9 runs; the small-scale reproduction's runs get the same two kinds of figure. Each curve of a
run figure is the mean over the seeds that exist, and its legend says how many.

    python scripts/make_figures.py --runs runs --out results/figures
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from adamx.schedules import BETA2_SCHEDULES, DEFAULT_BETA2, beta1_hat, beta2_hat_adam, beta2_hat_adamx
from scripts.results_io import Run, find_runs, load_paper, metric_series

Curves = dict[str, tuple[np.ndarray, np.ndarray]]

T_PAPER = 62480  # CIFAR-100 runs: 781 steps/epoch x 80 epochs
T1_PAPER = 37488  # 0.6 T
SCHEDULE_LABELS = {"adam": "Adam", "adafactor": "Adafactor", "adax": "AdaX", "adamx": "AdamX (ours)"}
SCHEDULE_PARAM = {"adam": "β2", "adafactor": "c", "adax": "β2", "adamx": "β2"}


def steps(t_max: int = T_PAPER, points: int = 600) -> np.ndarray:
    """1-based steps, log-spaced from 1 to t_max (integers, unique)."""
    return np.unique(np.round(np.geomspace(1, t_max, points))).astype(np.int64)


def _curve(fn: Callable[[float], float], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return t, np.array([fn(float(s)) for s in t], dtype=np.float64)


def figure1_data(t: np.ndarray | None = None, beta1: float = 0.9, beta2: float = 0.99) -> Curves:
    """AdamX's β̂1,t and β̂2,t versus t."""
    t = steps() if t is None else t
    return {
        f"β̂1,t (β1 = {beta1})": _curve(lambda s: beta1_hat(s, beta1), t),
        f"β̂2,t of AdamX (β2 = {beta2})": _curve(lambda s: beta2_hat_adamx(s, beta2), t),
    }


def figure2_data(t: np.ndarray | None = None, betas: tuple[float, ...] = (0.9, 0.99, 0.999)) -> Curves:
    """AdamX's versus Adam's β̂2,t for several β2."""
    t = steps() if t is None else t
    out: Curves = {}
    for b in betas:
        out[f"AdamX, β2 = {b}"] = _curve(lambda s, b=b: beta2_hat_adamx(s, b), t)
        out[f"Adam, β2 = {b}"] = _curve(lambda s, b=b: beta2_hat_adam(s, b), t)
    return out


def figure3_data(
    total: int = T_PAPER, t1: int = T1_PAPER, peak: float = 3e-3, minimum: float = 3e-5, points: int = 801
) -> Curves:
    """Eq. 15: linear from the peak LR to the minimum over t1 steps, then flat (Table 3's values)."""
    from experiments.train.schedule import (
        linear_to_min,
    )  # the harness, from the checkout (results_io puts it on the path)

    t = np.unique(np.concatenate([np.linspace(0, total, points).round(), [t1]])).astype(np.int64)
    return {
        f"Eq. 15: peak {peak:g}, min {minimum:g}, t1 = {t1}": _curve(
            lambda s: linear_to_min(int(s), peak, minimum, t1), t
        )
    }


def figure4_data(t: np.ndarray | None = None) -> Curves:
    """The four β̂2,t of the ablation (Tables 7-10), each with the paper's parameter."""
    t = steps() if t is None else t
    return {
        f"{SCHEDULE_LABELS[name]} ({SCHEDULE_PARAM[name]} = {DEFAULT_BETA2[name]:g})": _curve(
            lambda s, fn=fn, p=DEFAULT_BETA2[name]: fn(s, p), t
        )
        for name, fn in BETA2_SCHEDULES.items()
        if name in SCHEDULE_LABELS  # the paper's four; schedules a user registered are not the paper's
    }


def figure4_note(t_max: int = T_PAPER) -> str:
    """The sentence Figure 4 carries: AdaX's line is hidden under AdamX's, and by how little they differ
    (every integer step up to ``t_max``, not the plotted grid)."""
    t = range(1, t_max + 1)
    adax = np.array([BETA2_SCHEDULES["adax"](s, DEFAULT_BETA2["adax"]) for s in t])
    adamx = np.array([BETA2_SCHEDULES["adamx"](s, DEFAULT_BETA2["adamx"]) for s in t])
    rel = np.abs(adax - adamx) / (1.0 - adamx)
    return (
        f"AdaX's curve lies under AdamX's: for t ≤ {t_max:,} their β̂2,t differ by at most "
        f"{np.abs(adax - adamx).max():.1e}, their 1 − β̂2,t by at most {100 * rel.max():.1f} %."
    )


def smooth_loss(df: pd.DataFrame, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Appendix A's downsampling (every T//400 steps) and exponentially weighted smoothing
    (window max(5, 0.02 step), alpha 2/(window+1)), in FORWARD order: Appendix A's ``iloc[::-step]``
    walks the log backwards, which smooths from the last step and plots time reversed. ``total``: the
    run's planned number of steps when the log is still partial (the downsampling follows T, not the log)."""
    total = len(df) if total is None else total
    step = max(1, total // 400)
    window = max(5, step * 0.02)
    alpha = 2 / (window + 1)
    ds = df.iloc[::step]
    y = pd.to_numeric(ds["loss"], errors="coerce").ewm(alpha=alpha).mean().to_numpy()
    x = ds["step"].to_numpy() if "step" in ds.columns else np.arange(1, total + 1, step)
    return x.astype(np.float64), y


def _mean_over_seeds(per_seed: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(x) for x, _ in per_seed)
    return per_seed[0][0][:n], np.mean([y[:n] for _, y in per_seed], axis=0)


def _by_optimizer(runs: list[Run], experiment: str) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if r.experiment == experiment and r.status == "finished":
            groups[r.optimizer].append(r)
    return dict(sorted(groups.items()))


def train_loss_data(runs: list[Run], experiment: str) -> Curves:
    """Smoothed training loss per optimizer (mean over its seeds), label 'name (n=k)'."""
    out: Curves = {}
    for opt, group in _by_optimizer(runs, experiment).items():
        per_seed = [
            smooth_loss(df) for df in (r.read_train() for r in group) if df is not None and "loss" in df
        ]
        if per_seed:
            out[f"{opt} (n={len(per_seed)})"] = _mean_over_seeds(per_seed)
    return out


def horizon_loss_data(runs: list[Run], experiment: str) -> Curves:
    """Like ``train_loss_data``, but a row with no finished run yet is drawn from its longest unfinished
    (not failed) run, labelled partial with the step it has reached: an honest picture mid-sweep."""
    out = train_loss_data(runs, experiment)
    done = {label.split(" (n=")[0] for label in out}
    partial: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if r.experiment == experiment and r.status not in ("finished", "failed") and r.optimizer not in done:
            partial[r.optimizer].append(r)
    for opt, group in sorted(partial.items()):
        logs = [(r, df) for r, df in ((r, r.read_train()) for r in group) if df is not None and "loss" in df]
        if logs:
            run, df = max(logs, key=lambda pair: len(pair[1]))
            planned = run.summary.get("epochs", 0) * run.summary.get("steps_per_epoch", 0) or None
            out[f"{opt} (1 unfinished run, to step {int(df['step'].iloc[-1]):,})"] = smooth_loss(df, planned)
    return out


def eval_curve_data(runs: list[Run], experiment: str, metric: dict) -> Curves:
    """A metric (paper.yaml ``metrics`` entry) versus epoch per optimizer, mean over seeds."""
    out: Curves = {}
    for opt, group in _by_optimizer(runs, experiment).items():
        per_seed = []
        for r in group:
            df = r.read_eval()
            if df is None:
                continue
            y = metric_series(df, metric)
            if y is not None:
                x = df["epoch"].to_numpy(np.float64) if "epoch" in df else np.arange(1, len(df) + 1.0)
                per_seed.append((x, y.to_numpy(np.float64)))
        if per_seed:
            out[f"{opt} (n={len(per_seed)})"] = _mean_over_seeds(per_seed)
    return out


def plot(
    curves: Curves,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    complement: bool = False,
    logy: bool = False,
    note: str | None = None,
    vlines: dict[str, float] | None = None,
) -> Figure:
    """One line per curve, legend = the curve's label. ``complement`` adds a right panel with
    1 - y on log-log axes, where decay rates that all look like 1 on the left are told apart;
    ``note`` is a line of text under the axes; ``vlines`` marks steps (label -> x) with dotted lines."""
    ncols = 2 if complement else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols, 4.2), squeeze=False)
    ax = axes[0, 0]
    for label, (x, y) in curves.items():
        ax.plot(x, y, linewidth=1.4, label=label)
    if complement:
        right = axes[0, 1]
        for label, (x, y) in curves.items():
            right.plot(x, np.clip(1.0 - y, 1e-12, None), linewidth=1.4, label=label)
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_ylim(1e-8, 2.0)  # 1 - y in float64 is exact to ~1e-16, far below this floor
        right.set_xlabel(xlabel)
        right.set_ylabel(f"1 - {ylabel}")
        right.grid(alpha=0.3)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1.0, label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    return fig


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


REPRO_EXPERIMENTS = ("repro_optimizers", "repro_schedules")

# ---------------------------------------------------------------------- issue 25: Figure 5 and telemetry

FIG5_EXPERIMENT = "claims_fig5"
MECHANISM_EXPERIMENTS = ("claims_fig5_wd0", "claims_fig5_reset_v")
FIG5_MARKS = {"t = 19,344 (the paper's landmark)": 19344, "t = 41,976 (the v-reset point)": 41976}


def epoch_mean_curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per epoch (x = its last step): the median over seeds of each run's epoch-mean per-step loss."""
    per_seed = []
    for run in runs:
        df = run.read_train()
        if df is None or "loss" not in df:
            continue
        by_epoch = df.groupby("epoch", sort=True).agg(step=("step", "max"), loss=("loss", "mean"))
        per_seed.append((by_epoch["step"].to_numpy(np.float64), by_epoch["loss"].to_numpy(np.float64)))
    if not per_seed:
        return None
    n = min(len(x) for x, _ in per_seed)
    return per_seed[0][0][:n], np.median([y[:n] for _, y in per_seed], axis=0)


def full_loss_points(runs: list[Run]) -> tuple[np.ndarray, np.ndarray] | None:
    """The float64 full-batch training loss (full_loss.csv) per logged step, median over the seeds with it."""
    frames = []
    for run in runs:
        path = run.path / "full_loss.csv"
        if path.is_file() and path.stat().st_size:
            frames.append(pd.read_csv(path)[["step", "full_loss"]])
    if not frames:
        return None
    med = pd.concat(frames).groupby("step")["full_loss"].median()
    return med.index.to_numpy(np.float64), med.to_numpy(np.float64)


def figure5_groups(runs: list[Run]) -> dict[str, list[Run]]:
    """label -> finished runs: claims_fig5's optimizers, then the mechanism runs (labelled by experiment)."""
    groups = {opt: group for opt, group in _by_optimizer(runs, FIG5_EXPERIMENT).items()}
    for exp in MECHANISM_EXPERIMENTS:
        for opt, group in _by_optimizer(runs, exp).items():
            groups[f"{opt}, {exp.removeprefix(FIG5_EXPERIMENT + '_')}"] = group
    return groups


def figure5_protocol(groups: dict[str, list[Run]], title: str) -> Figure:
    """Figure 5 under its own protocol: left, the per-step loss as epoch means (median over seeds) on a
    forward, linear iteration axis with a log loss axis, and the float64 full-batch loss as markers; right,
    the paper's Appendix A smoothing (in forward order, mean over seeds), also on a log axis."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 4.6))
    for i, (label, group) in enumerate(groups.items()):
        color = f"C{i % 10}"
        curve = epoch_mean_curve(group)
        if curve is not None:
            left.plot(*curve, color=color, linewidth=1.0, label=f"{label} (n={len(group)})")
        points = full_loss_points(group)
        if points is not None:
            left.plot(*points, color=color, marker="o", markersize=3, linestyle="none")
        per_seed = [
            smooth_loss(df) for df in (r.read_train() for r in group) if df is not None and "loss" in df
        ]
        if per_seed:
            right.plot(
                *_mean_over_seeds(per_seed), color=color, linewidth=1.2, label=f"{label} (n={len(per_seed)})"
            )
    for ax, ylabel in (
        (left, "training loss: epoch mean of per-batch loss (line), full-batch float64 (dots)"),
        (right, "training loss, Appendix A smoothing (forward order)"),
    ):
        reached = max((line.get_xdata().max() for line in ax.get_lines() if len(line.get_xdata())), default=0)
        for x in FIG5_MARKS.values():
            if x <= reached:  # a shorter run (a check at a small scale) is not stretched to 41,976
                ax.axvline(x, color="grey", linestyle=":", linewidth=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("iteration t (forward)")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    if groups:
        left.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.text(
        0.5,
        0.01,
        "Left: median over seeds; right: mean over seeds of Appendix A's curve (every T//400 steps, EWM "
        "window max(5, 0.02 step)). Dotted: t = 19,344 and 41,976.",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


TELEMETRY_PANELS = [
    ("sqrt_v_q50", "median sqrt(v_hat) (solid), median |m_hat| (dashed)", True),
    ("one_minus_beta2_hat", "1 - beta2_hat (the rate v still moves at)", True),
    ("update_rms_over_lr", "update RMS / lr", True),
    ("frac_step_below_eps", "fraction of coordinates whose step (without decay) < eps * lr", False),
]


def telemetry_curves(runs: list[Run], group: int = 0) -> dict[str, pd.DataFrame]:
    """label -> optim.csv of param group ``group`` (0: the decayed weights), median over seeds per step."""
    out = {}
    for label, runs_ in figure5_groups(runs).items():
        frames = []
        for run in runs_:
            path = run.path / "optim.csv"
            if path.is_file() and path.stat().st_size:
                df = pd.read_csv(path)
                frames.append(df[df["group"] == group])
        if frames:
            numeric = pd.concat(frames).drop(columns=["optimizer"]).apply(pd.to_numeric, errors="coerce")
            med = numeric.groupby("step").median()
            med["one_minus_beta2_hat"] = 1.0 - med["beta2_hat"]
            med["n"] = len(frames)
            out[label] = med
    return out


def telemetry_figure(curves: dict[str, pd.DataFrame], title: str) -> Figure:
    """2 x 2 panels from optim.csv: the moments, 1 - beta2_hat, the update's size, the stalled fraction."""
    fig, axes = plt.subplots(2, 2, figsize=(12.0, 8.0))
    for ax, (column, ylabel, logy) in zip(axes.ravel(), TELEMETRY_PANELS, strict=True):
        for i, (label, med) in enumerate(curves.items()):
            color = f"C{i % 10}"
            if column not in med:
                continue
            y = med[column]
            if y.notna().any():
                ax.plot(
                    med.index, y, color=color, linewidth=1.1, label=f"{label} (n={int(med['n'].iloc[0])})"
                )
            if column == "sqrt_v_q50" and "m_abs_q50" in med and med["m_abs_q50"].notna().any():
                ax.plot(med.index, med["m_abs_q50"], color=color, linewidth=1.0, linestyle="--")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("iteration t")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    eps = next((float(m["step_eps"].iloc[0]) for m in curves.values() if "step_eps" in m), None)
    fig.suptitle(title + (f" (eps = {eps:g})" if eps is not None else ""), fontsize=10)
    fig.tight_layout()
    return fig


def make_figures(runs_root: Path | str, out: Path | str) -> list[Path]:
    """Write Figures 1-4 always, 5-6 and the small-scale run figures where runs exist; return paths."""
    out = Path(out)
    written: list[Path] = []
    exact = [
        ("figure1", figure1_data, "exponential decay rate", "Figure 1: β̂1,t and β̂2,t of AdamX", True),
        ("figure2", figure2_data, "β̂2,t", "Figure 2: AdamX's vs Adam's β̂2,t", True),
        ("figure3", figure3_data, "learning rate", "Figure 3: learning-rate schedule (Eq. 15)", False),
        ("figure4", figure4_data, "β̂2,t", "Figure 4: β̂2,t of the ablation (Adam + β̂2,t)", True),
    ]
    notes = {"figure4": figure4_note()}
    for name, data, ylabel, title, decay_rate in exact:
        fig = plot(
            data(), "iteration t", ylabel, title, logx=decay_rate, complement=decay_rate, note=notes.get(name)
        )
        written += save(fig, out, name)
    runs = find_runs(runs_root)
    metrics = load_paper()["metrics"]
    jobs = [
        ("figure5", "table8", None, "Figure 5: training loss vs iteration (Table 8 runs)"),
        ("figure6", "table9", "map50", "Figure 6: mAP@0.5 vs epoch (Table 9 runs)"),
    ]
    for exp in REPRO_EXPERIMENTS:
        jobs.append((f"{exp}_train_loss", exp, None, f"Training loss vs iteration ({exp}, digits)"))
        jobs.append((f"{exp}_eval_top1", exp, "top1_err", f"Top-1 error vs epoch ({exp}, digits)"))
    for name, exp, metric, title in jobs:
        if metric is None:
            curves = train_loss_data(runs, exp)
            labels = ("iteration t (forward; Appendix A smoothing)", "training loss (smoothed)")
        else:
            curves = eval_curve_data(runs, exp, metrics[metric])
            labels = ("epoch", metrics[metric]["label"])
        if (
            curves
        ):  # the small-scale losses span two decades: log axis there, the paper's linear one otherwise
            logy = metric is None and exp in REPRO_EXPERIMENTS
            written += save(plot(curves, *labels, title, logy=logy), out, name)
    # Issue 15: Figure 5 redrawn for the digits runs at the paper's horizon (results/README.md).
    curves = horizon_loss_data(runs, "claims_horizon")
    if curves:
        fig = plot(
            curves,
            "iteration t (forward; Appendix A smoothing)",
            "training loss (smoothed, log scale)",
            "Figure 5 redrawn: training loss vs iteration, digits, T = 62,480 (claims_horizon)",
            logy=True,
            vlines={
                "t = 19,344 (the paper's landmark)": 19344,
                "t1 = 37,488 (LR reaches its minimum)": 37488,
            },
            note="Curves are means over the finished seeds (n in the legend) of the smoothed per-step loss.",
        )
        written += save(fig, out, "claims_horizon_figure5")
    groups = figure5_groups(runs)
    if groups:
        title = "Figure 5 under Table 8's protocol (constant LR 2.2e-5), digits, T = 62,480 (claims_fig5)"
        written += save(figure5_protocol(groups, title), out, "claims_fig5_figure5")
    curves = telemetry_curves(runs)
    if curves:
        title = (
            "Optimizer telemetry, claims_fig5 (optim.csv, param group 0: decayed weights, median over seeds)"
        )
        written += save(telemetry_figure(curves, title), out, "claims_fig5_telemetry")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="runs root to scan (default: runs)")
    ap.add_argument("--out", default="results/figures", help="output folder (default: results/figures)")
    args = ap.parse_args(argv)
    for path in make_figures(args.runs, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
