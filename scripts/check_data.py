"""Read every file of a data set before a long sweep and report what training would trip over.

    python scripts/check_data.py dataset=voc [dataset.root=/data/voc] [workers=8] [strict_counts=false]
    python scripts/check_data.py dataset=sbd
    python scripts/check_data.py dataset=cifar100

Arguments are Hydra-style ``key=value`` overrides (the run's own spelling). ``dataset.root`` falls back to
the data set's environment variable and default folder, as in training. Every item of every split is
read in parallel (``workers`` processes, default: the CPUs this process may use; a tqdm bar) through
the loaders' own torch-free readers (``data/<name>/reader.py`` via ``data/<name>/check.py``); the report gives the item counts per split beside the real data set's,
every bad file by name with the reason, and per-class histograms. Exit status: 0 when nothing is wrong,
1 on any bad file or layout problem, or on counts unlike the real data set's (unless
``strict_counts=false``, for fixtures and subsets), 2 when the arguments or the root are wrong.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data.files import CheckPlan, FileReport

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = {"voc": "data.voc", "sbd": "data.sbd", "cifar100": "data.cifar"}
KEYS = {"dataset", "dataset.root", "workers", "strict_counts"}
USAGE = "usage: python scripts/check_data.py dataset=voc|sbd|cifar100 [dataset.root=PATH] [workers=N] [strict_counts=false]"


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """``key=value`` pairs; an unknown key or a missing ``dataset`` raises ValueError naming it."""
    args: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.lstrip("+").partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"Unknown argument {token!r}; accepted: {', '.join(sorted(KEYS))} as key=value.")
        args[key] = value
    if args.get("dataset") not in PACKAGES:
        raise ValueError(f"dataset={args.get('dataset')!r} is not one of {', '.join(PACKAGES)}.")
    if args.get("strict_counts", "true").lower() not in ("true", "false"):
        raise ValueError(f"strict_counts={args['strict_counts']!r} must be true or false.")
    return args


def _run_one(job: tuple[str, tuple]) -> FileReport:
    module, args = job
    return importlib.import_module(module).check_item(*args)


def run_checks(module: str, items: list[tuple], workers: int) -> list[FileReport]:
    """``check_item(*args)`` for every item, in ``workers`` processes (in this one when 1), with a bar."""
    jobs = [(module, args) for args in items]
    bar = dict(total=len(jobs), unit="item", desc="checking", mininterval=0.5, file=sys.stderr)
    if workers <= 1:
        return [_run_one(job) for job in tqdm(jobs, **bar)]
    chunk = max(1, min(64, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_run_one, jobs, chunksize=chunk), **bar))


def histogram_lines(names: tuple[str, ...], per_split: dict[str, Counter]) -> list[str]:
    """One line per class: its count in every split (classes never seen show 0). Past 25 classes
    (CIFAR-100), the smallest and largest class per split and the classes never seen instead."""
    splits = list(per_split)
    if len(names) > 25:
        lines = []
        for split, counts in per_split.items():
            full = [(counts[n], n) for n in names]
            (low, low_name), (high, high_name) = min(full), max(full)
            missing = [n for n in names if counts[n] == 0]
            lines.append(
                f"  {split}: {len(names) - len(missing)} of {len(names)} classes seen; fewest {low:,} ({low_name}), "
                f"most {high:,} ({high_name})"
                + (f"; none of {', '.join(missing[:10])}" if missing else "")
                + (", ..." if len(missing) > 10 else "")
            )
        return lines
    width = max(len(n) for n in names)
    lines = [f"  {'class':<{width}}  " + "  ".join(f"{s:>16}" for s in splits)]
    for name in names:
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{per_split[s][name]:>16,}" for s in splits))
    return lines


@dataclass
class Summary:
    """The reports of every item, added up per split."""

    images: Counter = field(default_factory=Counter)  # split -> images found
    readable: Counter = field(default_factory=Counter)  # split -> images of items without a problem
    classes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)


def summarise(plan: CheckPlan, reports: list[FileReport]) -> Summary:
    out = Summary(problems=list(plan.problems))
    for report in reports:
        out.images[report.split] += report.images
        out.readable[report.split] += 0 if report.problems else report.images
        out.classes[report.split].update(report.classes)
        out.problems.extend(report.problems)
    return out


def count_lines(
    plan: CheckPlan, summary: Summary, groups: dict[str, tuple[str, ...]]
) -> tuple[list[str], list[str]]:
    """The per-split count table, and one line per split whose count is not the real data set's."""
    lines, mismatches = [], []
    for split in plan.items:
        real = plan.expected.get(split)
        if real is None:  # a file without images (CIFAR's meta)
            lines.append(f"  {split:<18} {'-':>8} {'-':>8} {'-':>8}")
            continue
        found = summary.images[split]
        verdict = "ok" if found == real else "DIFFERS"
        lines.append(f"  {split:<18} {found:>8,} {summary.readable[split]:>8,} {real:>8,}  {verdict}")
        if found != real:
            mismatches.append(f"{split}: {found:,} images, the real data set has {real:,}")
    for group, parts in groups.items():
        found, real = sum(summary.images[p] for p in parts), sum(plan.expected[p] for p in parts)
        lines.append(f"  {group:<18} {found:>8,} {'':>8} {real:>8,}  (= {' + '.join(parts)})")
    return lines, mismatches


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_overrides(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"{err}\n{USAGE}", file=sys.stderr)
        return 2
    name = args["dataset"]
    package = importlib.import_module(PACKAGES[name])  # lazy: resolve_root comes from the torch-free reader
    check = importlib.import_module(f"{PACKAGES[name]}.check")
    root = package.resolve_root(args.get("dataset.root") or None)
    if not root.is_dir():
        print(f"{name}: {root} is not a folder; set dataset.root (or ${package.ENV_VAR}).", file=sys.stderr)
        return 2
    workers = int(args.get("workers") or len(os.sched_getaffinity(0)) or 1)  # the CPUs this process may use
    strict = args.get("strict_counts", "true").lower() == "true"

    plan = check.plan(root)
    items = [item for split_items in plan.items.values() for item in split_items]
    start = time.perf_counter()
    summary = summarise(plan, run_checks(check.__name__, items, workers))
    elapsed = time.perf_counter() - start

    rate = len(items) / max(elapsed, 1e-9)
    print(
        f"{name} under {root}: {len(items):,} items read in {elapsed:.1f} s ({rate:,.0f} items/s, {workers} workers)"
    )
    print("\nimages per split (found / without problems / the real data set):")
    lines, mismatches = count_lines(plan, summary, getattr(check, "GROUPS", {}))
    print("\n".join(lines))
    print("\nclass histogram:")
    shown = {split: summary.classes[split] for split in plan.items if split in plan.expected}
    print("\n".join(histogram_lines(check.CLASS_NAMES, shown)))
    print(f"\n{len(summary.problems)} problem(s):" if summary.problems else "\nNo bad files.")
    for problem in sorted(summary.problems):
        print(f"  {problem}")
    label = "count mismatch" if strict else "count mismatch (ignored: strict_counts=false)"
    for line in mismatches:
        print(f"  {label}: {line}")
    failed = bool(summary.problems) or (strict and bool(mismatches))
    print("\nFAILED: fix the files above before training." if failed else "\nOK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
