"""How far a sweep has got: one row per run under a runs root, totals per status, failed runs' reasons.

    python scripts/sweep_status.py runs                 # a table, once
    python scripts/sweep_status.py runs --watch 30      # refresh every 30 s (Ctrl-C stops)
    python scripts/sweep_status.py runs --expect 250    # the sweep has 250 jobs: count the unstarted ones in the ETA
    python scripts/sweep_status.py runs --json          # the same as JSON

It only reads run directories (summary.json, config.yaml and the tails of train.csv/eval.csv), so it is
safe while the sweep runs, from any machine that sees the runs root. A run whose summary says ``running``
but whose lock file nobody holds any more is shown as ``stale`` (its process died without a word).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.runs.runlock import LOCK_NAME, lock_held

STALE_AFTER_S = 3600.0  # without a lock file: a "running" run silent this long counts as stale
STATUS_ORDER = ("running", "starting", "interrupted", "stale", "unreadable", "failed", "finished")
TAIL_BYTES = 16384


@dataclass
class RunStatus:
    """What one run directory says about itself right now."""

    path: str
    experiment: str | None = None
    model: str | None = None
    optimizer: str | None = None
    seed: int | None = None
    status: str = "starting"
    reason: str | None = None
    epochs_done: int = 0
    epochs: int | None = None
    step: int = 0
    total_steps: int | None = None
    metric: str | None = None
    metric_value: float | None = None
    throughput: float | None = None  # training samples per second (summary.json)
    seconds_per_step: float | None = None  # wall time per step so far, evaluation included (train.csv)
    eta_s: float | None = None

    @property
    def remaining_s(self) -> float | None:
        """Wall time this run still needs at its measured pace (None when unknown)."""
        if self.status in ("finished", "failed"):
            return 0.0
        if self.seconds_per_step is None or self.total_steps is None:
            return None
        return max(0, self.total_steps - self.step) * self.seconds_per_step


# ---------------------------------------------------------------------- reading one run


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent, or caught between writes (they are atomic renames, so rarely)


def _read_yaml(path: Path) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def csv_tail(path: Path) -> dict[str, str] | None:
    """The last complete row of a CSV as a dict, reading only its header and last few kilobytes."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline()
            size = handle.seek(0, os.SEEK_END)
            start = max(len(header), size - TAIL_BYTES)
            handle.seek(start)
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    lines = tail.split("\n")[:-1]  # the last piece is a row still being written (or empty)
    if start > len(header):
        lines = lines[1:]  # the first piece may be cut
    lines = [line for line in lines if line.strip()]
    if not header.strip() or not lines:
        return None
    row = next(csv.reader(io.StringIO(lines[-1])))
    fields = next(csv.reader(io.StringIO(header.decode(errors="replace"))))
    return dict(zip(fields, row)) if len(row) == len(fields) else None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _newest_mtime(run_dir: Path) -> float:
    times = []
    for path in run_dir.iterdir():
        try:
            times.append(path.stat().st_mtime)
        except OSError:  # a temporary file renamed away meanwhile
            continue
    return max(times, default=0.0)


def read_run(run_dir: Path, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> RunStatus:
    """The state of one run directory, from its files alone; ``unreadable`` (with why) when its
    summary.json or config.yaml holds something the trainer never writes (one odd run must not hide
    the rest of the sweep)."""
    try:
        return _read_run(run_dir, now, stale_after_s)
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        why = " ".join(str(error).split()) or type(error).__name__
        return RunStatus(
            path=str(run_dir),
            status="unreadable",
            reason=f"summary.json or config.yaml holds unexpected values ({why[:200]}); fix or delete it",
        )


def _read_run(run_dir: Path, now: float | None, stale_after_s: float) -> RunStatus:
    now = time.time() if now is None else now
    run = RunStatus(path=str(run_dir))
    config = _read_yaml(run_dir / "config.yaml") or {}
    summary = _read_json(run_dir / "summary.json")
    if summary is not None and not isinstance(summary, dict):
        raise ValueError(f"summary.json holds a JSON {type(summary).__name__}, not an object")
    summary = summary or {}
    run.experiment = summary.get("experiment", config.get("experiment_name"))
    run.model = summary.get("model", (config.get("model") or {}).get("name"))
    run.optimizer = summary.get("optimizer", (config.get("optimizer") or {}).get("name"))
    seed = summary.get("seed", config.get("seed"))
    run.seed = int(seed) if seed is not None else None
    run.epochs = summary.get("epochs", (config.get("trainer") or {}).get("epochs"))

    if summary:
        run.status = str(summary.get("status", "running"))
        run.reason = summary.get("reason")
        run.epochs_done = int(summary.get("epochs_done") or 0)
        run.step = int(summary.get("steps") or 0)
        per_epoch = summary.get("steps_per_epoch")
        if per_epoch and run.epochs:
            run.total_steps = int(per_epoch) * int(run.epochs)
        run.metric = summary.get("primary_metric")
        run.throughput = _float(summary.get("throughput_samples_per_s"))
        final = (summary.get("final") or {}).get("metrics") or {}
        if run.metric in final:
            run.metric_value = _float(final[run.metric])

    train = csv_tail(run_dir / "train.csv")
    if train is not None and run.status not in ("finished", "failed"):
        step, elapsed = _float(train.get("step")), _float(train.get("time"))
        if step and step >= run.step:  # train.csv runs ahead of summary.json inside an epoch
            run.step = int(step)
            if elapsed:
                run.seconds_per_step = elapsed / step
    if run.metric is not None and run.metric_value is None:
        evals = csv_tail(run_dir / "eval.csv")
        if evals is not None:
            run.metric_value = _float(evals.get(run.metric))

    if run.status in ("running", "starting"):
        held = lock_held(run_dir)
        if held is False or (held is None and now - _newest_mtime(run_dir) > stale_after_s):
            run.status = "stale"
            run.reason = (
                run.reason or "marked running, but no process holds its lock: it died; re-run to resume"
            )
    if run.status == "running":
        run.eta_s = run.remaining_s
    return run


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (one holding config.yaml, summary.json or the lock), hidden ones skipped."""
    found = set()
    for name in ("summary.json", "config.yaml", LOCK_NAME):
        for path in root.rglob(name):
            rel = path.parent.relative_to(root).parts
            if not any(part.startswith(".") for part in rel):
                found.add(path.parent)
    return sorted(found)


# ---------------------------------------------------------------------- the sweep as a whole


def totals(runs: list[RunStatus]) -> dict[str, int]:
    counts = Counter(run.status for run in runs)
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    return {status: counts[status] for status in order}


def sweep_eta(runs: list[RunStatus], expect: int | None = None) -> float | None:
    """Seconds until the sweep is done at today's pace: all remaining work spread over the jobs running now.

    Unfinished runs count with their measured pace; ``expect`` - seen runs (not started yet) count with
    the mean duration of the runs measured so far. None while nothing runs or nothing is measured.
    """
    active = [run for run in runs if run.status == "running"]
    if not active:
        return None
    remaining = [run.remaining_s for run in runs if run.status not in ("finished", "failed")]
    known = [r for r in remaining if r is not None]
    durations = [
        run.seconds_per_step * run.total_steps for run in runs if run.seconds_per_step and run.total_steps
    ]
    if not known and not durations:
        return None
    mean = sum(durations) / len(durations) if durations else sum(known) / len(known)
    work = sum(known) + mean * (len(remaining) - len(known))
    if expect is not None:
        work += mean * max(0, expect - len(runs))
    longest = max((run.eta_s or 0.0) for run in active)
    return max(longest, work / len(active))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _cell(run: RunStatus) -> list[str]:
    epoch = f"{run.epochs_done}/{run.epochs}" if run.epochs else str(run.epochs_done)
    if run.total_steps and run.status not in ("finished", "failed"):
        epoch += f" ({100 * run.step / run.total_steps:.0f}%)"
    metric = "-" if run.metric_value is None else f"{run.metric} {run.metric_value:.4g}"
    speed = "-" if run.throughput is None else f"{run.throughput:.1f}/s"
    seed = "-" if run.seed is None else str(run.seed)
    return [
        run.experiment or "?",
        run.model or "?",
        run.optimizer or "?",
        seed,
        run.status,
        epoch,
        metric,
        speed,
        format_duration(run.eta_s),
    ]


HEADER = ["experiment", "model", "optimizer", "seed", "status", "epoch", "latest metric", "samples/s", "ETA"]


def render(root: Path, runs: list[RunStatus], expect: int | None = None) -> str:
    """The table, the totals per status, the sweep's ETA and the reasons of failed and stale runs."""
    rows = [HEADER] + [_cell(run) for run in runs]
    widths = [max(len(row[k]) for row in rows) for k in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    counts = totals(runs)
    seen = f"{len(runs)} runs" + (f" of {expect} expected" if expect else "")
    lines.append("")
    lines.append(f"{seen} under {root}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    done = all(run.status in ("finished", "failed") for run in runs) and len(runs) >= (expect or 0)
    lines.append("sweep ETA: " + ("done" if done else format_duration(sweep_eta(runs, expect))))
    trouble = [run for run in runs if run.status in ("failed", "stale", "unreadable") and run.reason]
    if trouble:
        lines.append("")
        lines += [f"{run.status} {run.path}: {run.reason}" for run in trouble]
    return "\n".join(lines)


def collect(root: Path, stale_after_s: float = STALE_AFTER_S) -> list[RunStatus]:
    now = time.time()
    return [read_run(path, now, stale_after_s) for path in find_runs(root)]


def as_json(root: Path, runs: list[RunStatus], expect: int | None = None) -> str:
    return json.dumps(
        {
            "runs_root": str(root),
            "runs": [asdict(run) for run in runs],
            "totals": totals(runs),
            "expected": expect,
            "sweep_eta_s": sweep_eta(runs, expect),
        },
        indent=2,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Progress of every run under a runs root.")
    parser.add_argument("runs_root", type=Path)
    parser.add_argument(
        "--watch", nargs="?", type=float, const=10.0, metavar="SECONDS", help="refresh every SECONDS (10)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--expect", type=int, help="number of jobs in the sweep (unstarted ones join the ETA)"
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        help="seconds of silence before a run without a lock file counts as stale",
    )
    args = parser.parse_args(argv)
    if not args.runs_root.is_dir():
        print(
            f"error: {args.runs_root} is not a directory; pass the runs_root the sweep writes to.",
            file=sys.stderr,
        )
        return 2
    if args.watch is not None and args.watch <= 0:
        print(f"error: --watch {args.watch} must be a positive number of seconds.", file=sys.stderr)
        return 2
    try:
        return _loop(args)
    except KeyboardInterrupt:
        return 0


def _loop(args: argparse.Namespace) -> int:
    while True:
        runs = collect(args.runs_root, args.stale_after)
        text = (
            as_json(args.runs_root, runs, args.expect)
            if args.json
            else render(args.runs_root, runs, args.expect)
        )
        if args.watch is None:
            print(text)
            return 0
        sys.stdout.write("\033[H\033[J" + time.strftime("%H:%M:%S ") + text + "\n")
        sys.stdout.flush()
        time.sleep(args.watch)


if __name__ == "__main__":
    sys.exit(main())
