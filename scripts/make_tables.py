"""Turn run directories into the paper's tables: results/tables/table<N>.{md,csv,tex}.

Each cell is mean ± std over seeds (n) at the best epoch (the paper's protocol: lowest error /
highest mAP or mIoU over training, each metric at its own best) and at the final epoch, with the
paper's value beside it and a two-sided Welch t-test p-value of each row against the AdamX row
(when both have n >= 2). Missing rows print as "—", failed runs are listed with their reason.
Only eval.csv (and summary.json's status/reason, config.yaml's names) are read.

    python scripts/make_tables.py --runs runs --out results/tables
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from scripts import stats as st
from scripts.results_io import (
    PAPER_PROTOCOL,
    Run,
    best_and_final,
    epoch_end,
    find_runs,
    full_loss_at,
    load_paper,
    read_full_loss,
    steps_per_epoch,
    time_to_target,
    train_loss_area,
    train_loss_at,
    train_losses_between,
)

DASH = "—"
PAPER_MARK = "†"  # on every paper column; the footnote gives the paper's protocol and ours

# The seven optimizers of the cross-type comparisons (repro_optimizers, claims_tuned), in table order.
OPTIMIZER_LABELS = [
    ("adam", "Adam"),
    ("adax", "AdaX"),
    ("sgd", "momentum SGD"),
    ("radam", "RAdam"),
    ("lion", "Lion"),
    ("sophiag", "SophiaG"),
    ("adamx", "AdamX"),
]


# The beta2_hat_t ablation at the paper's horizon (claims_horizon, claims_fig5): the four schedules and AdaX.
HORIZON_LABELS = [
    ("adam", "Adam + Adam's beta2_hat (b2 = 0.999)"),
    ("adam+adafactor", "Adam + Adafactor's beta2_hat (c = 0.8)"),
    ("adam+adax", "Adam + AdaX's beta2_hat (b2 = 1e-4)"),
    ("adamx", "AdamX = Adam + AdamX's beta2_hat (b2 = 0.99)"),
    ("adax", "AdaX"),
]


def _rows(labels: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """A small-scale table's rows: optimizer name -> label, with no paper values."""
    return {name: {"label": label, "values": {}} for name, label in labels}


# Small-scale reproduction tables (configs/experiment/repro_*.yaml): no paper values, their own headers.
SMALL_SCALE_TABLES: dict[str, dict[str, Any]] = {
    "repro_optimizers": {
        "caption": "Small-scale reproduction, optimizers of the same and of different types (Tables 3 and 11/12 style)",
        "columns": ["top1_err", "loss"],
        "reference": "adamx",
        "rows": _rows(OPTIMIZER_LABELS),
    },
    "repro_schedules": {
        "caption": "Small-scale reproduction, ablation of the second-moment decay rate beta2_hat_t (Table 7 style)",
        "columns": ["top1_err", "loss"],
        "reference": "adam+adamx",
        "rows": {
            name: {"label": label, "values": {}}
            for name, label in [
                ("adam", "Adam + Adam's beta2_hat (b2 = 0.999)"),
                ("adam+adafactor", "Adam + Adafactor's beta2_hat (c = 0.8)"),
                ("adam+adax", "Adam + AdaX's beta2_hat (b2 = 1e-4)"),
                ("adam+adamx", "Adam + AdamX's beta2_hat (b2 = 0.99)"),
            ]
        },
    },
    # Issue 15: the paper's claims at its horizon and under an equal tuning budget (results/README.md).
    "claims_horizon": {
        "caption": "Ablation of beta2_hat_t at the paper's horizon, T = 62,480 steps (digits, Figure 5's claim)",
        "columns": ["top1_err", "loss"],
        "reference": "adamx",
        "target": {"train_loss": 1.0e-4},
        "landmarks": [19344, 37488, 62480],
        "landmark_window": 44,  # one epoch of steps ending at the landmark
        "auc_after": 19344,
        # Figure 5's claim: the beta2_hat -> 1 rows (AdamX's, AdaX's) converge faster after 19,344, so the
        # other schedules' training loss is predicted HIGHER than AdamX's (row - reference > 0)
        "claims": {"landmarks": {"adam": "higher", "adam+adafactor": "higher"}},
        "rows": _rows(HORIZON_LABELS),
    },
    "claims_tuned": {
        "caption": "Optimizers at the LR each chose on a validation grid (equal tuning budget), test set",
        "columns": ["top1_err", "loss"],
        "reference": "adamx",
        "rows": _rows(OPTIMIZER_LABELS),
        # the best epoch is picked on the test set itself (optimistic); the final epoch is the clean number
        "clean": "final",
        # Tables 11-12's claim: AdamX beats the others, i.e. their test error is HIGHER than AdamX's
        "claims": {"top1_err final": {name: "higher" for name, _ in OPTIMIZER_LABELS if name != "adamx"}},
    },
    # Issue 25: Figure 5's claim under Table 8's protocol (constant LR 2.2e-5), configs/experiment/claims_fig5.yaml
    "claims_fig5": {
        "caption": "Ablation of beta2_hat_t under Figure 5's protocol (Table 8: constant LR 2.2e-5), T = 62,480 steps (digits)",
        "columns": ["top1_err", "loss"],
        "reference": "adamx",
        "landmarks": [19344, 37488, 41976, 46376, 62480],
        "landmark_window": "epoch",  # the whole epoch containing the landmark: never two epochs
        "auc_after": 19344,
        "trend_window": 441,  # running median over ~10 epochs: the trend part of the area
        "claims": {
            "landmarks": {"adam": "higher", "adam+adafactor": "higher"},
            "full-batch float64 loss": {"adam": "higher", "adam+adafactor": "higher"},
        },
        "rows": _rows(HORIZON_LABELS),
    },
}

# Issue 25's mechanism runs beside the protocol runs they vary: rows are "<experiment>:<optimizer>".
MECHANISM_TABLE = {
    "name": "claims_fig5_mechanism",
    "experiments": ["claims_fig5", "claims_fig5_wd0", "claims_fig5_reset_v"],
    "optimizers": ["adamx", "adam"],
    "spec": {
        "caption": "Mechanism: AdamX with weight decay 0, and AdamX with its state restarted at step 41,976",
        "reference": "claims_fig5:adamx",
        "landmarks": [41976, 46376, 62480],
        "landmark_window": "epoch",
        "claims": {},
        "rows": {
            "claims_fig5:adamx": {"label": "AdamX (wd 0.01)"},
            "claims_fig5_wd0:adamx": {"label": "AdamX, weight decay 0"},
            "claims_fig5_reset_v:adamx": {"label": "AdamX, state restarted at 41,976"},
            "claims_fig5:adam": {"label": "Adam (wd 0.01)"},
        },
    },
}


@dataclass
class Stat:
    """Mean, sample std and n of one metric of one row, plus the per-seed values."""

    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan


def welch_p(a: Stat, b: Stat) -> float:
    """Two-sided Welch t-test p-value of a vs b; NaN unless both have n >= 2 and some spread."""
    if a.n < 2 or b.n < 2:
        return math.nan
    if np.std(a.values) == 0 and np.std(b.values) == 0:
        return math.nan
    return float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)


def table_specs(paper: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """experiment_name -> table spec (the paper's tables, then the small-scale ones)."""
    specs = dict(paper["tables"])
    specs.update(SMALL_SCALE_TABLES)
    return specs


@dataclass
class TableResult:
    """Everything one table needs: per-row, per-metric best/final stats, p-values, failures."""

    name: str
    spec: dict[str, Any]
    rows: list[str]
    best: dict[tuple[str, str], Stat]
    final: dict[tuple[str, str], Stat]
    best_epoch: dict[tuple[str, str], Stat]
    p_best: dict[tuple[str, str], float]
    p_final: dict[tuple[str, str], float]
    failed: list[Run]
    unfinished: list[Run]
    runs: list[Run]
    target: dict[str, Any] | None = None
    steps_to_target: dict[str, list[float | None]] = field(default_factory=dict)  # row -> per seed
    target_text: str = ""  # "steps to top1_err <= 2.5"


def check_target(target: Any, metrics: dict[str, Any], where: str) -> dict[str, Any]:
    """A target declaration, checked: ``{metric: <metric>, value: v}`` or ``{train_loss: v}``."""
    ok = isinstance(target, dict) and (
        (set(target) == {"train_loss"} and isinstance(target["train_loss"], (int, float)))
        or (
            set(target) == {"metric", "value"}
            and target["metric"] in metrics
            and isinstance(target["value"], (int, float))
        )
    )
    if not ok:
        raise ValueError(
            f"{where} declares target {target!r}; write {{metric: <one of {', '.join(metrics)}>, value: <number>}} "
            "or {train_loss: <number>}."
        )
    return dict(target)


def resolve_target(spec: dict[str, Any], metrics: dict[str, Any], runs: list[Run]) -> dict[str, Any] | None:
    """The table's target: its spec's ``target``, else the ``target`` key of its runs' config.yaml (which
    must then agree), else None (no time-to-target column)."""
    if spec.get("target") is not None:
        return check_target(spec["target"], metrics, "the table definition")
    found = {repr(r.config["target"]): r for r in runs if r.config.get("target") is not None}
    if len(found) > 1:
        raise ValueError(
            f"runs of one experiment declare different targets ({'; '.join(found)}); make them agree or "
            "set the table definition's target."
        )
    if not found:
        return None
    run = next(iter(found.values()))
    return check_target(run.config["target"], metrics, f"{run.path}/config.yaml")


def target_label(target: dict[str, Any], metrics: dict[str, Any]) -> str:
    if "train_loss" in target:
        return f"steps to train loss <= {target['train_loss']:g}"
    spec = metrics[target["metric"]]
    sign = ">=" if spec["higher_is_better"] else "<="
    return f"steps to {target['metric']} {sign} {target['value']:g}"


def median_steps(per_seed: list[float | None]) -> float | None:
    """Median over seeds with a seed that never reached counted as infinitely late: None when at
    least half did not reach it (the median is then not a step)."""
    if not per_seed:
        return None
    vals = sorted(math.inf if v is None else v for v in per_seed)
    n = len(vals)
    med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    return None if math.isinf(med) else med


def fmt_steps(per_seed: list[float | None]) -> str:
    """'median (min-max), k/n reached', or 'not reached (k/n)'; the spread is over the seeds that reached."""
    if not per_seed:
        return DASH
    reached = [v for v in per_seed if v is not None]
    k, n = len(reached), len(per_seed)
    med = median_steps(per_seed)
    if med is None:
        return f"not reached ({k}/{n} reached)"
    spread = f" ({min(reached):,.0f}-{max(reached):,.0f})" if k > 1 else ""
    return f"{med:,.0f}{spread}, {k}/{n} reached"


def compute_table(name: str, spec: dict[str, Any], metrics: dict[str, Any], runs: list[Run]) -> TableResult:
    """Aggregate the finished runs of one table over seeds."""
    best: dict[tuple[str, str], Stat] = defaultdict(Stat)
    final: dict[tuple[str, str], Stat] = defaultdict(Stat)
    best_epoch: dict[tuple[str, str], Stat] = defaultdict(Stat)
    failed = [r for r in runs if r.status == "failed"]
    unfinished = [r for r in runs if r.status not in ("finished", "failed")]
    rows = list(spec["rows"])
    for run in runs:
        if run.status != "finished":
            continue
        if run.optimizer not in rows:
            rows.append(run.optimizer)
        df = run.read_eval()
        if df is None:
            continue
        for col in spec["columns"]:
            got = best_and_final(df, metrics[col])
            if got is None:
                continue
            b, epoch, f = got
            best[run.optimizer, col].values.append(b)
            best_epoch[run.optimizer, col].values.append(epoch)
            if not math.isnan(f):
                final[run.optimizer, col].values.append(f)
    ref = spec["reference"]
    p_best, p_final = {}, {}
    for row in rows:
        for col in spec["columns"]:
            if row == ref:
                continue
            p_best[row, col] = welch_p(best[row, col], best[ref, col])
            p_final[row, col] = welch_p(final[row, col], final[ref, col])
    target = resolve_target(spec, metrics, runs)
    steps_to: dict[str, list[float | None]] = {}
    if target is not None:
        for run in runs:
            if run.status == "finished":
                steps_to.setdefault(run.optimizer, []).append(time_to_target(run, target, metrics))
    return TableResult(
        name,
        spec,
        rows,
        best,
        final,
        best_epoch,
        p_best,
        p_final,
        failed,
        unfinished,
        runs,
        target,
        steps_to,
        target_label(target, metrics) if target is not None else "",
    )


def fmt_stat(s: Stat, digits: int = 2) -> str:
    if s.n == 0:
        return DASH
    if s.n == 1:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} (n={s.n})"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return DASH
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt_paper(spec: dict[str, Any], row: str, col: str) -> str:
    v = spec["rows"].get(row, {}).get("values", {}).get(col)
    return DASH if v is None else f"{v:.2f}"


def header_lines(res: TableResult) -> list[str]:
    """Caption, the paper's settings, and the settings the runs actually used (their scale)."""
    spec = res.spec
    lines = [f"{res.name}: {spec['caption']}"]
    if "settings" in spec:
        s = spec["settings"]
        keys = ("model", "dataset", "epochs", "batch_size", "schedule", "lr_peak", "lr_min", "t1")
        lines.append("Paper settings: " + ", ".join(f"{k}={s[k]}" for k in keys if k in s))
    if spec.get("notes"):
        lines.append(f"Note: {spec['notes']}")
    finished = [r for r in res.runs if r.status == "finished"]
    if finished:

        def uniq(key: str) -> str:
            vals = sorted({str(_cfg(r, key)) for r in finished})
            return "/".join(vals)

        seeds = sorted({r.seed for r in finished if r.seed is not None})
        wall = [_wall(r) for r in finished]
        wall_txt = (
            f"{sum(w for w in wall if w is not None) / 60:.1f} min summed over runs"
            if any(w is not None for w in wall)
            else "unknown"
        )
        devices = sorted({str(r.summary.get("device")) for r in finished if r.summary.get("device")})
        lines.append(
            "Runs: model={}, dataset={}, epochs={}, batch_size={}, seeds={} ({} finished runs), device={}, "
            "train wall time={}".format(
                uniq("model.name"),
                uniq("dataset.name"),
                uniq("trainer.epochs"),
                uniq("dataset.batch_size"),
                ",".join(map(str, seeds)) or DASH,
                len(finished),
                "/".join(devices) or "unknown",
                wall_txt,
            )
        )
    return lines


def _cfg(run: Run, dotted: str) -> Any:
    node: Any = run.config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "?"
        node = node[part]
    return node


def _wall(run: Run) -> float | None:
    for key in ("wall_time_s", "wall_time", "train_time_s", "elapsed_s"):
        v = run.summary.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def has_paper_values(spec: dict[str, Any]) -> bool:
    return any(row.get("values") for row in spec["rows"].values())


def table_rows(res: TableResult, metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the display table (markdown and LaTeX share it); the paper column only
    where the paper has values (not for the small-scale tables)."""
    paper = has_paper_values(res.spec)
    head = ["Optimizer"]
    for col in res.spec["columns"]:
        label = metrics[col]["label"]
        head += [f"{label} best", "p best", f"{label} final", "p final"] + (
            [f"{label} paper{PAPER_MARK}"] if paper else []
        )
    body = []
    for row in res.rows:
        label = res.spec["rows"].get(row, {}).get("label", row)
        line = [f"{label} [{row}]"]
        for col in res.spec["columns"]:
            ref = row == res.spec["reference"]
            line += [
                fmt_stat(res.best[row, col], metrics[col].get("digits", 2)),
                "ref" if ref else fmt_p(res.p_best.get((row, col))),
                fmt_stat(res.final[row, col], metrics[col].get("digits", 2)),
                "ref" if ref else fmt_p(res.p_final.get((row, col))),
            ] + ([fmt_paper(res.spec, row, col)] if paper else [])
        if res.target is not None:
            line.append(fmt_steps(res.steps_to_target.get(row, [])))
        body.append(line)
    if res.target is not None:
        head.append(res.target_text + " (median, range)")
    return head, body


def runs_protocol(runs: list[Run]) -> str:
    """How the counted runs were made: their seeds and whether deterministic algorithms were on."""
    finished = [r for r in runs if r.status == "finished"]
    if not finished:
        return "no finished runs"
    seeds = sorted({r.seed for r in finished if r.seed is not None})
    flags = {_cfg(r, "trainer.deterministic") for r in finished}
    det = {frozenset({True}): "on", frozenset({False}): "off"}.get(frozenset(flags), "mixed or unrecorded")
    return f"mean ± sample std over n seeds (seeds {','.join(map(str, seeds)) or DASH}; deterministic {det})"


def footer_lines(res: TableResult) -> list[str]:
    lines = [
        "best = each metric at its own best epoch (the paper's protocol); final = last evaluation; "
        f"mean ± sample std over seeds (n); p = two-sided Welch t-test vs the {res.spec['reference']} row; "
        f"{DASH} = no runs / not computable."
    ]
    if res.target is not None:
        what = (
            "the last step of the first epoch whose mean training loss (train.csv) is at or past it"
            if "train_loss" in res.target
            else "the step of the first evaluation (eval.csv) at or past it"
        )
        lines.append(
            f"Time to target ({res.target_text}): {what}; median over seeds (a seed that never reached counts "
            "as infinitely late), range over the seeds that reached; 'not reached' when half or more never did."
        )
    if has_paper_values(res.spec):
        lines.append(
            f"{PAPER_MARK} paper: {PAPER_PROTOCOL} (the authors' scripts; python run.py ... +protocol=authors "
            f"repeats it); ours: {runs_protocol(res.runs)}."
        )
    if res.failed:
        lines.append("Failed runs:")
        lines += [
            f"- {r.optimizer} seed {r.seed}: {r.reason or 'no reason recorded'} ({r.path})"
            for r in res.failed
        ]
    if res.unfinished:
        lines.append("Not counted (status running/unknown):")
        lines += [f"- {r.optimizer} seed {r.seed}: status {r.status} ({r.path})" for r in res.unfinished]
    return lines


def to_markdown(res: TableResult, metrics: dict[str, Any], extra_header: list[str]) -> str:
    head, body = table_rows(res, metrics)
    hl = header_lines(res)
    out = [f"# {hl[0]}", ""] + [f"{line}  " for line in hl[1:] + extra_header] + [""]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * len(head)) + "|")
    out += ["| " + " | ".join(line) + " |" for line in body]
    out += [""] + footer_lines(res)
    return "\n".join(out) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")]:
        s = s.replace(a, b)
    return s.replace("±", r"$\pm$").replace(DASH, "--").replace(PAPER_MARK, r"$^\dagger$")


def to_latex(res: TableResult, metrics: dict[str, Any], extra_header: list[str]) -> str:
    head, body = table_rows(res, metrics)
    lines = [f"% {line}" for line in header_lines(res) + extra_header + footer_lines(res)]
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _tex_escape(res.spec["caption"]) + "}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}",
        r"\toprule",
        " & ".join(_tex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex_escape(c) for c in line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _stat_cells(st: Stat, p: float | None) -> list[str]:
    """The CSV cells of one statistic: mean, std, n, p vs the reference, and the quoted per-seed values."""
    return [
        "" if st.n == 0 else f"{st.mean:.10g}",
        "" if st.n < 2 else f"{st.std:.10g}",
        str(st.n),
        "" if p is None or math.isnan(p) else f"{p:.10g}",
        '"' + ";".join(f"{v:.10g}" for v in st.values) + '"',
    ]


def to_csv(res: TableResult) -> str:
    """Long format, one line per (row, metric, best/final): machine-readable numbers."""
    cols = ["table", "optimizer", "metric", "which", "mean", "std", "n", "p_vs_reference", "paper", "values"]
    cols.append("paper_protocol")
    out = [",".join(cols)]
    for row in res.rows:
        for col in res.spec["columns"]:
            paper = res.spec["rows"].get(row, {}).get("values", {}).get(col)
            for which, stat, p in [
                ("best", res.best[row, col], res.p_best.get((row, col))),
                ("final", res.final[row, col], res.p_final.get((row, col))),
                ("best_epoch", res.best_epoch[row, col], None),
            ]:
                mean, std, n, p_text, vals = _stat_cells(stat, p)
                no_paper = paper is None or which == "best_epoch"
                out.append(
                    ",".join(
                        [res.name, row, col, which, mean, std, n, p_text]
                        + ["" if no_paper else f"{paper}", vals, "" if no_paper else f'"{PAPER_PROTOCOL}"']
                    )
                )
        if res.target is not None and row in res.steps_to_target:
            per_seed = res.steps_to_target[row]
            med = median_steps(per_seed)
            vals = ";".join("not_reached" if v is None else f"{v:.10g}" for v in per_seed)
            label = "train_loss" if "train_loss" in res.target else res.target["metric"]
            value = res.target.get("train_loss", res.target.get("value"))
            out.append(
                f"{res.name},{row},steps_to_{label}<={value:g},median,"
                + ("" if med is None else f"{med:.10g}")
                + f',,{len(per_seed)},,,"{vals}",'
            )
    return "\n".join(out) + "\n"


@dataclass
class LandmarkResult:
    """Training loss at fixed steps and its area after one of them, per row (Figure 5's claim in numbers)."""

    name: str
    spec: dict[str, Any]
    rows: list[str]
    columns: list[str]  # "loss@<t>" ..., "area>(<start>)"
    stats: dict[tuple[str, str], Stat]
    p: dict[tuple[str, str], float]
    unfinished_used: int  # runs still going that contributed the landmarks they had passed


def _landmark_columns(spec: dict[str, Any]) -> list[str]:
    marks = [int(t) for t in spec["landmarks"]]
    start = spec.get("auc_after")
    cols = [f"loss@{t}" for t in marks]
    if start is not None:
        cols.append(f"area>{start}")
        if spec.get("trend_window"):
            cols += [f"area>{start} trend", f"area>{start} spikes"]
    return cols + [f"full@{t}" for t in marks]


def compute_landmarks(name: str, spec: dict[str, Any], runs: list[Run]) -> LandmarkResult:
    """For a spec with ``landmarks``: each run's mean per-step training loss over its window at each
    landmark, the area under its per-step loss from ``auc_after`` to the last landmark (split into trend
    and spikes when the spec has ``trend_window``: ``stats.area_split``), and the float64 full-batch loss
    at each landmark where full_loss.csv has it (``full@t``: the quantity the claim is about).

    ``landmark_window``: a number of steps ending at t, or ``"epoch"``: the whole epoch containing t (so
    the window never straddles two epochs; for t = 19,344 at 44 steps per epoch, steps 19,317-19,360).
    A run counts for every landmark its logs have reached (failed runs never), so n is per cell."""
    marks = [int(t) for t in spec["landmarks"]]
    window = spec.get("landmark_window", 1)
    start = spec.get("auc_after")
    trend_window = spec.get("trend_window")
    columns = _landmark_columns(spec)
    stats_: dict[tuple[str, str], Stat] = defaultdict(Stat)
    rows = list(spec["rows"])
    used_unfinished = 0
    for run in runs:
        if run.status == "failed":
            continue
        df = run.read_train()
        if df is None or "loss" not in df:
            continue
        if run.optimizer not in rows:
            rows.append(run.optimizer)
        if window == "epoch":
            spe = steps_per_epoch(run, df)
            values = [train_loss_at(df, epoch_end(t, spe), spe) if spe else math.nan for t in marks]
        else:
            values = [train_loss_at(df, t, int(window)) for t in marks]
        if start is not None:
            values.append(train_loss_area(df, int(start), marks[-1]))
            if trend_window:
                part = train_losses_between(df, int(start), marks[-1])
                split = (
                    st.area_split(part.to_list(), int(trend_window)) if part is not None else (math.nan,) * 3
                )
                values += [split[1], split[2]]
        full = read_full_loss(run)
        values += [full_loss_at(full, t) for t in marks]
        got = False
        for col, v in zip(columns, values, strict=True):
            if not math.isnan(v):
                stats_[run.optimizer, col].values.append(v)
                got = True
        used_unfinished += int(got and run.status != "finished")
    ref = spec["reference"]
    columns = [c for c in columns if not c.startswith("full@") or any(stats_[r, c].n for r in rows)]
    p = {  # losses and areas span decades: Welch on their log10 (stats.welch)
        (row, col): st.welch(stats_[row, col].values, stats_[ref, col].values, "log10")
        for row in rows
        if row != ref
        for col in columns
    }
    return LandmarkResult(name, spec, rows, columns, stats_, p, used_unfinished)


# ---------------------------------------------------------------------- issue 25: the tests a reviewer wants


def _family_of(column: str) -> str:
    if column.startswith("full@"):
        return "full-batch float64 loss"
    if column.endswith(" trend") or column.endswith(" spikes"):
        return "area split"
    return "landmarks"


def landmark_comparisons(res: LandmarkResult) -> list[st.Comparison]:
    """Every landmark quantity of every row vs the reference, on log10 (losses and areas span decades);
    families: per-batch landmarks + area, the area's trend and spike parts, the full-batch float64 loss."""
    ref = res.spec["reference"]
    claims = res.spec.get("claims", {})
    out = []
    for col in res.columns:
        family = _family_of(col)
        for row in res.rows:
            if row == ref or res.stats[row, col].n == 0:
                continue
            claim = claims.get(family, {}).get(row)
            out.append(
                st.compare(
                    family, row, col, res.stats[row, col].values, res.stats[ref, col].values, "log10", claim
                )
            )
    return st.adjust(out)


def metric_scale(column: str) -> str:
    """log10 for losses (they span decades), the values themselves for errors, mAP and mIoU in %."""
    return "log10" if column == "loss" else "linear"


def table_family(spec: dict[str, Any], col: str, which: str) -> str:
    """The family name of a table column; a spec with ``clean: final`` marks its final-epoch column as the
    clean one and its best-epoch column as picked on the test set (optimistic)."""
    name = f"{col} {which}"
    if spec.get("clean") == "final":
        name += " (clean)" if which == "final" else " (epoch picked on the test set: optimistic)"
    return name


def table_comparisons(res: TableResult) -> list[st.Comparison]:
    """Each metric's best and final values of every row vs the reference, one Holm family per (metric, which)."""
    ref = res.spec["reference"]
    claims = res.spec.get("claims", {})
    out = []
    for col in res.spec["columns"]:
        for which, table in (("final", res.final), ("best", res.best)):
            for row in res.rows:
                if row == ref or table[row, col].n == 0:
                    continue
                claim = claims.get(f"{col} {which}", {}).get(row)
                out.append(
                    st.compare(
                        table_family(res.spec, col, which),
                        row,
                        col,
                        table[row, col].values,
                        table[ref, col].values,
                        metric_scale(col),
                        claim,
                    )
                )
    return st.adjust(out)


def tests_header(name: str, spec: dict[str, Any], extra: list[str]) -> list[str]:
    lines = [f"Reference row: {spec['reference']}; every comparison is a row against it over seeds."]
    if spec.get("clean") == "final":
        lines.append(
            "The final-epoch column is the clean comparison: the best epoch is chosen on the test set itself."
        )
    if spec.get("landmark_window") == "epoch":
        lines.append(
            "loss@t = mean per-step (per-batch, dropout on, float32) training loss over the whole epoch that "
            "contains t; full@t = eval-mode training loss over every training sample in float64 at step t "
            "(full_loss.csv): the quantity the claim is about."
        )
    return lines + list(extra)


def write_tests(
    out: Path, name: str, spec: dict[str, Any], comparisons: list[st.Comparison], extra: list[str]
) -> list[Path]:
    """``<name>_tests.{md,csv}``: n, medians, Welch (on the stated scale), exact Mann-Whitney, Holm, effect, verdict."""
    out.mkdir(parents=True, exist_ok=True)
    md = st.comparisons_markdown(
        f"{name}: tests against {spec['reference']}", comparisons, tests_header(name, spec, extra)
    )
    paths = [out / f"{name}_tests.md", out / f"{name}_tests.csv"]
    paths[0].write_text(md)
    paths[1].write_text(st.comparisons_csv(comparisons))
    return paths


def _csv_values(cell: str) -> list[float]:
    return [float(v) for v in cell.split(";") if v not in ("", "not_reached")]


def comparisons_from_csv(tables: Path | str, name: str, spec: dict[str, Any]) -> list[st.Comparison]:
    """The same tests from the per-seed values a committed ``<name>.csv`` / ``<name>_landmarks.csv`` hold
    (for tables whose run directories are not in the repository); spike counts from ``<name>_spikes.csv``
    or, failing that, the per-seed column of ``<name>_spikes.md``."""
    import csv as csv_mod

    tables = Path(tables)
    ref = spec["reference"]
    claims = spec.get("claims", {})
    out: list[st.Comparison] = []
    main = tables / f"{name}.csv"
    if main.is_file():
        cells = {
            (r["optimizer"], r["metric"], r["which"]): _csv_values(r["values"])
            for r in csv_mod.DictReader(main.open())
            if r["which"] in ("best", "final")
        }
        for col in spec["columns"]:
            for which in ("final", "best"):
                for (row, metric, w), values in cells.items():
                    if metric != col or w != which or row == ref or not values:
                        continue
                    claim = claims.get(f"{col} {which}", {}).get(row)
                    reference = cells.get((ref, col, which), [])
                    out.append(
                        st.compare(
                            table_family(spec, col, which),
                            row,
                            col,
                            values,
                            reference,
                            metric_scale(col),
                            claim,
                        )
                    )
    marks = tables / f"{name}_landmarks.csv"
    if marks.is_file():
        cells = {
            (r["optimizer"], r["quantity"]): _csv_values(r["values"])
            for r in csv_mod.DictReader(marks.open())
        }
        for (row, quantity), values in cells.items():
            if row == ref or not values:
                continue
            family = _family_of(quantity)
            claim = claims.get(family, {}).get(row)
            out.append(
                st.compare(family, row, quantity, values, cells.get((ref, quantity), []), "log10", claim)
            )
    spikes = read_spike_counts(tables, name)
    for row, values in spikes.items():
        if row != ref and ref in spikes:
            out.append(st.compare("spike epochs", row, "spike epochs", values, spikes[ref], "linear"))
    return st.adjust(out)


def read_spike_counts(tables: Path, name: str) -> dict[str, list[float]]:
    """optimizer -> per-seed spike-epoch counts, from ``<name>_spikes.csv`` or the table in ``<name>_spikes.md``."""
    import csv as csv_mod

    path = tables / f"{name}_spikes.csv"
    if path.is_file():
        return {r["optimizer"]: _csv_values(r["spike_epochs"]) for r in csv_mod.DictReader(path.open())}
    path = tables / f"{name}_spikes.md"
    out: dict[str, list[float]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] not in ("optimizer", "") and not cells[0].startswith("-"):
            try:
                out[cells[0]] = [float(v) for v in cells[2].split(",")]
            except ValueError:
                continue
    return out


def _sci(s: Stat) -> str:
    if s.n == 0:
        return DASH
    if s.n == 1:
        return f"{s.mean:.3g} (n=1)"
    return f"{s.mean:.3g} ± {s.std:.2g} (n={s.n})"


def landmarks_markdown(res: LandmarkResult, extra_header: list[str]) -> str:
    spec = res.spec
    window = spec.get("landmark_window", 1)
    where = (
        "over the whole epoch that contains step t (never two epochs)"
        if window == "epoch"
        else f"over the {int(window)} steps ending at step t"
    )
    head = ["Optimizer"]
    for col in res.columns:
        head += [col, "p"]
    out = [f"# {res.name}: training loss at the paper's landmarks", ""]
    out += [f"{line}  " for line in extra_header] + [""] if extra_header else []
    out += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in res.rows:
        line = [f"{spec['rows'].get(row, {}).get('label', row)} [{row}]"]
        for col in res.columns:
            line += [
                _sci(res.stats[row, col]),
                "ref" if row == spec["reference"] else fmt_p(res.p.get((row, col))),
            ]
        out.append("| " + " | ".join(line) + " |")
    out += [
        "",
        f"loss@t = mean per-step (per-batch, dropout on, float32) training loss (train.csv) {where}; "
        + (
            f"area>{spec['auc_after']} = sum of the per-step training loss over steps "
            f"{spec['auc_after']}+1 .. {spec['landmarks'][-1]} (unit step width)"
            + (
                f", split into trend (below the running median over {spec['trend_window']} steps) and spikes "
                "(above it)"
                if spec.get("trend_window")
                else ""
            )
            + "; "
            if spec.get("auc_after") is not None
            else ""
        )
        + "full@t = eval-mode training loss over every training sample in float64 at step t (full_loss.csv), "
        "where the runs logged it. Mean ± sample std over seeds (n); "
        f"p = two-sided Welch t-test on log10 of the values vs the {spec['reference']} row (Mann-Whitney, Holm "
        f"and effect intervals: {res.name}_tests.md); {DASH} = no run reached that step.",
    ]
    if res.unfinished_used:
        out.append(
            f"PARTIAL: {res.unfinished_used} run(s) still training contribute the landmarks they have passed; "
            "n differs per cell."
        )
    return "\n".join(out) + "\n"


def landmarks_csv(res: LandmarkResult) -> str:
    out = ["table,optimizer,quantity,mean,std,n,p_vs_reference,values"]
    for row in res.rows:
        for col in res.columns:
            stat, p = res.stats[row, col], res.p.get((row, col))
            out.append(",".join([res.name, row, col, *_stat_cells(stat, p)]))
    return "\n".join(out) + "\n"


def experiment_notes(runs: list[Run]) -> list[str]:
    """Header lines kept beside the runs in ``<runs_root>/<experiment>/NOTES.txt`` (hardware, sweep wall
    time: what the run files cannot say), so a plain re-run of this script keeps them."""
    lines: list[str] = []
    for exp_dir in sorted({r.path.parents[2] for r in runs if len(r.path.parents) > 2}):
        notes = exp_dir / "NOTES.txt"
        if notes.is_file():
            lines += [line.strip() for line in notes.read_text().splitlines() if line.strip()]
    return lines


def with_landmarks(
    spec: dict[str, Any], landmarks: list[int] | None, auc_after: int | None
) -> dict[str, Any]:
    """``spec`` with its landmarks (and the area's start) replaced, for a check at another horizon."""
    if not spec.get("landmarks") or (landmarks is None and auc_after is None):
        return spec
    spec = dict(spec)
    if landmarks is not None:
        spec["landmarks"] = list(landmarks)
    if auc_after is not None and "auc_after" in spec:
        spec["auc_after"] = auc_after
    return spec


def make_tables(
    runs_root: Path | str,
    out: Path | str,
    experiment_prefix: str = "",
    note: list[str] | None = None,
    landmarks: list[int] | None = None,
    auc_after: int | None = None,
) -> list[Path]:
    """Write table<N>/repro_*.{md,csv,tex} for every known experiment with runs; return the paths.
    ``landmarks``/``auc_after`` replace every landmark table's own (a check at a shorter horizon)."""
    paper = load_paper()
    metrics = paper["metrics"]
    specs = {name: with_landmarks(spec, landmarks, auc_after) for name, spec in table_specs(paper).items()}
    out = Path(out)
    by_exp: dict[str, list[Run]] = defaultdict(list)
    for run in find_runs(runs_root):
        by_exp[run.experiment].append(run)
    written = []
    for exp, runs in sorted(by_exp.items()):
        if not exp.startswith(experiment_prefix):
            continue
        if exp not in specs:
            print(f"skipping experiment {exp!r}: not a table (known: {', '.join(specs)})", file=sys.stderr)
            continue
        res = compute_table(exp, specs[exp], metrics, runs)
        lines = experiment_notes(runs) + list(note or [])
        out.mkdir(parents=True, exist_ok=True)
        for ext, text in [
            ("md", to_markdown(res, metrics, lines)),
            ("csv", to_csv(res)),
            ("tex", to_latex(res, metrics, lines)),
        ]:
            path = out / f"{exp}.{ext}"
            path.write_text(text)
            written.append(path)
        comparisons = table_comparisons(res)
        if specs[exp].get("landmarks"):
            marks = compute_landmarks(exp, specs[exp], runs)
            for ext, text in [("md", landmarks_markdown(marks, lines)), ("csv", landmarks_csv(marks))]:
                path = out / f"{exp}_landmarks.{ext}"
                path.write_text(text)
                written.append(path)
            comparisons += landmark_comparisons(marks)
        written += write_tests(out, exp, specs[exp], comparisons, lines)
    mech = MECHANISM_TABLE
    if mech["name"].startswith(experiment_prefix) or experiment_prefix.startswith("claims_fig5"):
        written += write_mechanism(by_exp, out, landmarks, auc_after)
    return written


def mechanism_runs(by_exp: dict[str, list[Run]]) -> list[Run]:
    """The mechanism table's runs, each renamed ``<experiment>:<optimizer>``."""
    import dataclasses

    out = []
    for exp in MECHANISM_TABLE["experiments"]:
        for run in by_exp.get(exp, []):
            if run.optimizer in MECHANISM_TABLE["optimizers"]:
                out.append(dataclasses.replace(run, optimizer=f"{exp}:{run.optimizer}"))
    return out


def write_mechanism(
    by_exp: dict[str, list[Run]], out: Path, landmarks: list[int] | None = None, auc_after: int | None = None
) -> list[Path]:
    """claims_fig5_mechanism_{landmarks.md,landmarks.csv,tests.md,tests.csv} when a mechanism run exists."""
    runs = mechanism_runs(by_exp)
    if not any(not r.optimizer.startswith("claims_fig5:") for r in runs):
        return []
    name = MECHANISM_TABLE["name"]
    spec = with_landmarks(MECHANISM_TABLE["spec"], landmarks, auc_after)
    marks = compute_landmarks(name, spec, runs)
    lines = experiment_notes(runs)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, text in [("md", landmarks_markdown(marks, lines)), ("csv", landmarks_csv(marks))]:
        path = out / f"{name}_landmarks.{ext}"
        path.write_text(text)
        written.append(path)
    return written + write_tests(out, name, spec, landmark_comparisons(marks), lines)


def tests_from_committed_csv(tables: Path | str, experiment_prefix: str = "") -> list[Path]:
    """``<experiment>_tests.{md,csv}`` for every small-scale table whose per-seed values are committed under
    ``tables`` (no run directories needed)."""
    written = []
    for name, spec in SMALL_SCALE_TABLES.items():
        if not name.startswith(experiment_prefix):
            continue
        comparisons = comparisons_from_csv(tables, name, spec)
        if comparisons:
            note = [
                f"Recomputed from the per-seed values in {Path(tables).as_posix()}/{name}*.csv (and _spikes.md)."
            ]
            written += write_tests(Path(tables), name, spec, comparisons, note)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="runs root to scan (default: runs)")
    ap.add_argument("--out", default="results/tables", help="output folder (default: results/tables)")
    ap.add_argument("--experiment-prefix", default="", help="only experiments whose name starts with this")
    ap.add_argument(
        "--note",
        action="append",
        default=[],
        help="extra header line (repeatable; <experiment dir>/NOTES.txt too)",
    )
    ap.add_argument(
        "--landmarks",
        help="comma-separated steps replacing every landmark table's landmarks (a check at a shorter horizon)",
    )
    ap.add_argument("--auc-after", type=int, help="with --landmarks: the step the area starts after")
    ap.add_argument(
        "--from-csv",
        metavar="TABLES",
        help="recompute only the <experiment>_tests files from the per-seed values of committed tables in TABLES",
    )
    args = ap.parse_args(argv)
    if args.from_csv:
        if not Path(args.from_csv).is_dir():
            print(f"No tables folder {args.from_csv!r}; pass the folder that holds <experiment>.csv.")
            return 1
        for path in tests_from_committed_csv(args.from_csv, args.experiment_prefix):
            print(path)
        return 0
    if not Path(args.runs).is_dir():
        print(
            f"No runs folder {args.runs!r}; train first (python run.py experiment=table3 ...) or pass --runs."
        )
        return 1
    try:
        landmarks = [int(t) for t in args.landmarks.split(",")] if args.landmarks else None
    except ValueError:
        ap.error(f"--landmarks {args.landmarks!r} must be comma-separated step numbers, e.g. 88,176,352")
    written = make_tables(args.runs, args.out, args.experiment_prefix, args.note, landmarks, args.auc_after)
    if not written:
        print(f"No runs of a known table under {args.runs!r}; nothing written.")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
