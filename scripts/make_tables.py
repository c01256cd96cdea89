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

from scripts.results_io import (
    PAPER_PROTOCOL,
    Run,
    best_and_final,
    find_runs,
    load_paper,
    time_to_target,
    train_loss_area,
    train_loss_at,
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
        "rows": {
            name: {"label": label, "values": {}}
            for name, label in [
                ("adam", "Adam + Adam's beta2_hat (b2 = 0.999)"),
                ("adam+adafactor", "Adam + Adafactor's beta2_hat (c = 0.8)"),
                ("adam+adax", "Adam + AdaX's beta2_hat (b2 = 1e-4)"),
                ("adamx", "AdamX = Adam + AdamX's beta2_hat (b2 = 0.99)"),
                ("adax", "AdaX"),
            ]
        },
    },
    "claims_tuned": {
        "caption": "Optimizers at the LR each chose on a validation grid (equal tuning budget), test set",
        "columns": ["top1_err", "loss"],
        "reference": "adamx",
        "rows": _rows(OPTIMIZER_LABELS),
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
            for which, st, p in [
                ("best", res.best[row, col], res.p_best.get((row, col))),
                ("final", res.final[row, col], res.p_final.get((row, col))),
                ("best_epoch", res.best_epoch[row, col], None),
            ]:
                mean, std, n, p_text, vals = _stat_cells(st, p)
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


def compute_landmarks(name: str, spec: dict[str, Any], runs: list[Run]) -> LandmarkResult:
    """For a spec with ``landmarks``: each run's mean training loss over the ``landmark_window`` steps
    ending at each landmark, and the area under its per-step loss from ``auc_after`` to the last landmark.
    A run counts for every landmark its train.csv has reached (failed runs never), so n is per cell."""
    marks = [int(t) for t in spec["landmarks"]]
    window = int(spec.get("landmark_window", 1))
    start = spec.get("auc_after")
    columns = [f"loss@{t}" for t in marks] + ([f"area>{start}"] if start is not None else [])
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
        values = [train_loss_at(df, t, window) for t in marks]
        if start is not None:
            values.append(train_loss_area(df, int(start), marks[-1]))
        got = False
        for col, v in zip(columns, values):
            if not math.isnan(v):
                stats_[run.optimizer, col].values.append(v)
                got = True
        used_unfinished += int(got and run.status != "finished")
    ref = spec["reference"]
    p = {
        (row, col): welch_p(stats_[row, col], stats_[ref, col])
        for row in rows
        if row != ref
        for col in columns
    }
    return LandmarkResult(name, spec, rows, columns, stats_, p, used_unfinished)


def _sci(s: Stat) -> str:
    if s.n == 0:
        return DASH
    if s.n == 1:
        return f"{s.mean:.3g} (n=1)"
    return f"{s.mean:.3g} ± {s.std:.2g} (n={s.n})"


def landmarks_markdown(res: LandmarkResult, extra_header: list[str]) -> str:
    spec = res.spec
    window = int(spec.get("landmark_window", 1))
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
        f"loss@t = mean per-step training loss (train.csv) over the {window} steps ending at step t; "
        f"area>{spec.get('auc_after')} = sum of the per-step training loss over steps "
        f"{spec.get('auc_after')}+1 .. {spec['landmarks'][-1]} (unit step width); mean ± sample std over seeds (n); "
        f"p = two-sided Welch t-test vs the {spec['reference']} row; {DASH} = no run reached that step.",
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
            st, p = res.stats[row, col], res.p.get((row, col))
            out.append(",".join([res.name, row, col, *_stat_cells(st, p)]))
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


def make_tables(
    runs_root: Path | str, out: Path | str, experiment_prefix: str = "", note: list[str] | None = None
) -> list[Path]:
    """Write table<N>/repro_*.{md,csv,tex} for every known experiment with runs; return the paths."""
    paper = load_paper()
    metrics = paper["metrics"]
    specs = table_specs(paper)
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
        if specs[exp].get("landmarks"):
            marks = compute_landmarks(exp, specs[exp], runs)
            for ext, text in [("md", landmarks_markdown(marks, lines)), ("csv", landmarks_csv(marks))]:
                path = out / f"{exp}_landmarks.{ext}"
                path.write_text(text)
                written.append(path)
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
    args = ap.parse_args(argv)
    if not Path(args.runs).is_dir():
        print(
            f"No runs folder {args.runs!r}; train first (python run.py experiment=table3 ...) or pass --runs."
        )
        return 1
    written = make_tables(args.runs, args.out, args.experiment_prefix, args.note)
    if not written:
        print(f"No runs of a known table under {args.runs!r}; nothing written.")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
