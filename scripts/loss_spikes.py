"""Late loss spikes and exactly-zero losses per run, from train.csv (issue 15, part 1).

    python scripts/loss_spikes.py --runs runs/claims --experiment claims_horizon
    python scripts/loss_spikes.py --runs runs/claims --experiment claims_horizon --after 5000 --threshold 1e-3

Section 3 of the paper credits β̂2,t → 1 with fewer "spikes" of the training loss. Per finished run this
counts the epochs that end after step ``--after`` whose mean per-step training loss exceeds
``--threshold`` (a spike epoch), the largest such epoch mean and the step its epoch ends at, and the
steps whose logged loss is exactly 0.0 (every sample predicted with probability 1 in float32: the
landmark means include them). Writes ``<out>/<experiment>_spikes.md`` and prints it.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import pandas as pd

from scripts import stats as st
from scripts.results_io import Run, epoch_losses, find_runs


def run_spikes(train: pd.DataFrame, after: int, threshold: float) -> dict[str, float]:
    """Spike epochs (epoch-mean loss > threshold, epoch ending after step ``after``), the worst one, zeros."""
    by_epoch = epoch_losses(train)
    late = by_epoch[by_epoch["step"] > after]
    worst = late["loss"].idxmax() if len(late) else None
    return {
        "spike_epochs": int((late["loss"] > threshold).sum()),
        "worst_loss": float(late["loss"].max()) if worst is not None else math.nan,
        "worst_step": int(late.loc[worst, "step"]) if worst is not None else -1,
        "zero_steps": int((train["loss"] == 0.0).sum()),
    }


def collect(
    runs: list[Run], experiment: str, after: int, threshold: float
) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """optimizer -> [(seed, run_spikes(...))] over the finished runs of ``experiment``, in seed order."""
    rows: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
    for run in runs:
        if run.experiment != experiment or run.status != "finished":
            continue
        train = run.read_train()
        if train is not None and len(train):
            rows[run.optimizer].append((run.seed or 0, run_spikes(train, after, threshold)))
    return {name: sorted(got, key=lambda r: r[0]) for name, got in sorted(rows.items())}


def spikes_table(
    runs: list[Run], experiment: str, after: int, threshold: float, reference: str = "adamx"
) -> str:
    """Markdown: one line per optimizer, the per-seed values listed in seed order; the spike-epoch counts vs
    the ``reference`` optimizer's by a two-sided Welch t-test (counts: on the counts themselves) and an exact
    Mann-Whitney U test, both Holm-adjusted across the table's family (every row vs the reference)."""
    rows = collect(runs, experiment, after, threshold)
    ref = [r["spike_epochs"] for _, r in rows.get(reference, [])]
    tests = {
        name: st.compare(
            "spike epochs", name, "spike epochs", [r["spike_epochs"] for _, r in got], ref, "linear"
        )
        for name, got in rows.items()
        if name != reference
    }
    st.adjust(list(tests.values()))
    m = st.family_sizes(list(tests.values())).get("spike epochs", 0)
    lines = [
        f"# {experiment}: late loss spikes and exactly-zero losses (finished runs)",
        "",
        f"spike epochs = epochs ending after step {after:,} whose mean per-step training loss exceeds "
        f"{threshold:g}; worst = the largest such epoch mean (step its epoch ends at); zero steps = steps "
        f"whose logged loss is exactly 0.0. Values per seed, in seed order; p = two-sided Welch t-test of the "
        f"spike-epoch counts vs {reference}; MW = two-sided exact Mann-Whitney U; Holm = Welch p adjusted across "
        f"this table's family ({m} tests: every row vs {reference}).",
        "",
        "| optimizer | seeds | spike epochs | mean | p | MW p | Holm | worst epoch-mean loss (step) | zero-loss steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, got in rows.items():
        counts = [r["spike_epochs"] for _, r in got]
        worst = ", ".join(f"{r['worst_loss']:.2g} ({r['worst_step']:,})" for _, r in got)
        zeros = ", ".join(f"{r['zero_steps']:,}" for _, r in got)
        seeds = ",".join(str(s) for s, _ in got)
        mean = sum(counts) / len(counts)
        if name == reference:
            cells = ["ref", "ref", "ref"]
        else:
            c = tests[name]
            cells = [st.fmt_p(c.p_welch), st.fmt_p(c.p_mw), st.fmt_p(c.p_welch_holm)]
        lines.append(
            f"| {name} | {seeds} | {', '.join(map(str, counts))} | {mean:.1f} | {' | '.join(cells)} | {worst} | {zeros} |"
        )
    return "\n".join(lines) + "\n"


def spikes_csv(runs: list[Run], experiment: str, after: int, threshold: float) -> str:
    """One line per optimizer with the per-seed values (make_tables --from-csv reads the counts from it)."""
    out = ["experiment,optimizer,seeds,spike_epochs,zero_steps,after,threshold"]
    for name, got in collect(runs, experiment, after, threshold).items():
        seeds = ";".join(str(s) for s, _ in got)
        counts = ";".join(str(r["spike_epochs"]) for _, r in got)
        zeros = ";".join(str(r["zero_steps"]) for _, r in got)
        out.append(f'{experiment},{name},"{seeds}","{counts}","{zeros}",{after},{threshold:g}')
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/claims", help="runs root")
    ap.add_argument("--experiment", default="claims_horizon")
    ap.add_argument("--after", type=int, default=5000, help="count epochs ending after this step")
    ap.add_argument("--threshold", type=float, default=1e-3, help="epoch-mean training loss of a spike")
    ap.add_argument("--reference", default="adamx", help="the optimizer the p-values compare against")
    ap.add_argument("--out", default="results/tables", help="where <experiment>_spikes.md goes")
    args = ap.parse_args(argv)
    if args.after < 0 or args.threshold <= 0:
        ap.error(f"--after must be >= 0 and --threshold > 0 (got {args.after}, {args.threshold:g})")
    runs = find_runs(args.runs)
    if not any(r.experiment == args.experiment and r.status == "finished" for r in runs):
        print(f"No finished {args.experiment!r} runs under {args.runs!r}; run its sweep first.")
        return 1
    text = spikes_table(runs, args.experiment, args.after, args.threshold, args.reference)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.experiment}_spikes.md").write_text(text)
    (Path(args.out) / f"{args.experiment}_spikes.csv").write_text(
        spikes_csv(runs, args.experiment, args.after, args.threshold)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
