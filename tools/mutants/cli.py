"""Mutation testing of the core: plant one realistic slip at a time and see whether a test fails.

    python tools/mutants/cli.py list                       # mutants per file
    python tools/mutants/cli.py run --jobs 2               # all groups -> runs/mutants/results.jsonl
    python tools/mutants/cli.py run --group adamx --sample 40 --tests-ref f0e7ff3 --out runs/mutants/before.jsonl
    python tools/mutants/cli.py report [--out ...]         # score per group and file, survivors listed
    python tools/mutants/cli.py compare --before runs/mutants/before.jsonl --before-tests-ref f0e7ff3

Operators and exclusions: tools/mutants/operators.py. Groups and their tests: tools/mutants/targets.py.
Survivors judged equivalent (they cannot change behaviour) are listed, one line each with the reason, in
tools/mutants/equivalent.txt and left out of the score. docs/testing.md has the measured scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tools.mutants import coverage_map
from tools.mutants.operators import Mutant, mutants
from tools.mutants.targets import GROUPS, group_of

ROOT = Path(__file__).resolve().parents[2]


EQUIVALENT = Path(__file__).with_name("equivalent.txt")
DEFAULT_OUT = ROOT / "runs" / "mutants" / "results.jsonl"
SUBPROCESS_TIMEOUT = 900.0


def sampled(found: list[Mutant], n: int | None) -> list[Mutant]:
    """A fixed pseudo-random subset of n mutants (by hash of their key), kept in source order."""
    if n is None or len(found) <= n:
        return found
    chosen = set(sorted(found, key=lambda m: hashlib.sha1(m.key.encode()).hexdigest())[:n])
    return [m for m in found if m in chosen]


def fingerprint(group: str, path: str, root: Path = ROOT, tests_ref: str | None = None) -> str:
    """Changes when the mutated file or any of its group's tests change: results older than that are stale.
    With `tests_ref`, the tests are those of that commit (the suite a `run --tests-ref` scored)."""
    h = hashlib.sha1((root / path).read_bytes())
    for test in [
        *GROUPS[group]["tests"],
        *GROUPS[group].get("subprocess", []),
        *GROUPS[group].get("always", []),
    ]:
        h.update(test.encode() + _test_bytes(root, test, tests_ref))
    return h.hexdigest()[:12]


def _test_bytes(root: Path, test: str, tests_ref: str | None) -> bytes:
    if tests_ref is None:
        return (root / test).read_bytes() if (root / test).exists() else b"-"
    shown = subprocess.run(["git", "show", f"{tests_ref}:{test}"], cwd=root, capture_output=True)
    return shown.stdout if shown.returncode == 0 else b"-"


def source_hash(path: str, root: Path = ROOT) -> str:
    return hashlib.sha1((root / path).read_bytes()).hexdigest()[:12]


def still_killed(row: dict | None, args: argparse.Namespace, root: Path) -> bool:
    """With --keep-killed, a mutant killed before stays killed while its file is unchanged: tests were only
    added since (this project never weakens a test), so only the survivors need to run again. With
    --tests-ref the suite is pinned to a commit, so any verdict on the unchanged file stands."""
    if not row or row.get("src") != source_hash(row["path"], root):
        return False
    if args.tests_ref:
        return row["verdict"] in ("killed", "timeout", "survived") and row.get("tests_ref") == args.tests_ref
    return bool(args.keep_killed and row["verdict"] in ("killed", "timeout"))


def group_mutants(group: str, root: Path, sample: int | None) -> list[Mutant]:
    found = []
    for path in GROUPS[group]["sources"]:
        found += mutants(path, (root / path).read_text())
    return sampled(found, sample)


def equivalent_keys() -> dict[str, str]:
    keys = {}
    for line in EQUIVALENT.read_text().splitlines() if EQUIVALENT.exists() else []:
        if line.strip() and not line.startswith("#"):
            key, _, why = line.partition("#")
            keys[key.strip()] = why.strip()
    return keys


def read_results(path: Path) -> dict[str, dict]:
    rows = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill; that mutant runs again
        rows[row["key"]] = row
    return rows


def cmd_list(args: argparse.Namespace) -> None:
    total = 0
    for group in args.group or GROUPS:
        for path in GROUPS[group]["sources"]:
            found = mutants(path, (ROOT / path).read_text())
            ops = Counter(m.op for m in found)
            total += len(found)
            print(
                f"{group:26s} {path:40s} {len(found):5d}  "
                + " ".join(f"{k}={v}" for k, v in sorted(ops.items()))
            )
    print(f"total {total}")


def coverage_for(groups: list[str], root: Path, out: Path) -> dict:
    """The line -> tests map for these groups, reused while neither their sources nor their tests change."""
    tests = list(dict.fromkeys(t for g in groups for t in GROUPS[g]["tests"]))
    sources = [s for g in groups for s in GROUPS[g]["sources"]]
    h = hashlib.sha1()
    for rel in [*tests, *sources]:
        h.update(rel.encode() + ((root / rel).read_bytes() if (root / rel).exists() else b"-"))
    h.update(b"map v2")  # the map's format: at_import added
    dest = out.with_name(f"{out.stem}.cov-{h.hexdigest()[:12]}.json")
    if dest.exists():
        return json.loads(dest.read_text())
    print(f"mapping which tests run which lines ({len(tests)} test files under coverage) ...", flush=True)
    start = time.monotonic()
    cmap = coverage_map.build(root, tests, sources, dest)
    print(f"  done in {time.monotonic() - start:.0f} s", flush=True)
    return cmap


def cmd_run(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from tools.mutants import runner

    out = Path(args.out).resolve()  # the coverage run and the mutants work in copies of the repo
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_results(out)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="adamx-mutants-"))
    slots = [runner.Slot(workdir / f"w{i}") for i in range(args.jobs)]
    for slot in slots:
        runner.copy_tree(ROOT, slot.root, args.tests_ref)
    os.environ["OMP_NUM_THREADS"] = "1"
    runner.preload()
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        if not name.startswith("tools.mutants"):
            del sys.modules[name]
    groups = args.group or list(GROUPS)
    cmap = coverage_for(groups, slots[0].root, out)
    jobs, timeouts, uncovered = [], {}, 0
    with out.open("a") as results:
        for group in groups:
            fps = {path: fingerprint(group, path, slots[0].root) for path in GROUPS[group]["sources"]}
            todo = [
                m
                for m in group_mutants(group, slots[0].root, args.sample)
                if (
                    done.get(m.key, {}).get("fp") != fps[m.path]
                    or done[m.key]["verdict"] in ("error", "uncovered")
                )
                and not still_killed(done.get(m.key), args, slots[0].root)
            ]
            for m in todo:
                fields = {"group": group, "fp": fps[m.path], "src": source_hash(m.path, slots[0].root)}
                if args.tests_ref:
                    fields["tests_ref"] = args.tests_ref
                tests = coverage_map.covering(cmap, m.path, m.lines)
                if tests:  # value checks that need not execute the file (a default read by inspection)
                    tests += [t for t in GROUPS[group].get("always", []) if t not in tests]
                timeouts[m.key] = 30.0 + 3 * coverage_map.cost(cmap, tests)
                if not tests and GROUPS[group].get("subprocess"):
                    # reached only from other processes (run.py, torchrun): the group's end-to-end tests
                    tests, timeouts[m.key] = GROUPS[group]["subprocess"], SUBPROCESS_TIMEOUT
                    fields["markers"] = "not gpu"
                if not tests:  # no test runs this statement: a survivor, no need to run it
                    results.write(json.dumps(runner.row(m, "uncovered", None, 0.0, fields)) + "\n")
                    uncovered += 1
                    continue
                jobs.append((m, tests, fields))
            print(f"{group}: {len(todo)} mutants to run", flush=True)
    print(f"{uncovered} mutants on lines no test runs (counted as survivors); {len(jobs)} to run", flush=True)
    counts: Counter = Counter()
    start = time.monotonic()
    with tqdm(total=len(jobs), unit="mutant", disable=not sys.stderr.isatty()) as bar:

        def progress(verdict: str) -> None:
            counts[verdict] += 1
            bar.update(1)
            bar.set_postfix(counts)

        runner.run(jobs, slots, timeouts, out, progress)
    print(
        f"ran {len(jobs)} mutants in {time.monotonic() - start:.0f} s with {args.jobs} jobs: {dict(counts)}"
    )
    print(f"results: {out}; workdir: {workdir}")


def score_table(rows: list[dict], equivalent: dict[str, str]) -> tuple[list[str], list[dict]]:
    """Markdown lines of the score per group and file, and the surviving, non-equivalent rows."""
    by_file = {}
    for row in rows:
        by_file.setdefault(row["path"], []).append(row)
    lines = [
        "| group | file | mutants | killed | timeout | survived | uncovered | equivalent | error | score |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    survivors, totals = [], Counter()
    for group, spec in GROUPS.items():
        g = Counter()
        for path in spec["sources"]:
            c = Counter()
            for row in by_file.get(path, []):
                verdict = "equivalent" if row["key"] in equivalent else row["verdict"]
                if verdict == "invalid":
                    continue  # does not compile: not a mutant
                c[verdict] += 1
                if verdict in ("survived", "uncovered", "error"):
                    survivors.append(row)
            if not c:
                continue
            lines.append(_row(group, path, c))
            g.update(c)
        if g:
            lines.append(_row(f"**{group}**", "(all)", g))
            totals.update(g)
    lines.append(_row("**core**", "(all)", totals))
    return lines, survivors


def _row(group: str, path: str, c: Counter) -> str:
    n = sum(c.values())
    scored = n - c["equivalent"]
    score = (c["killed"] + c["timeout"]) / scored if scored else float("nan")
    return (
        f"| {group} | {path} | {n} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['uncovered']} "
        f"| {c['equivalent']} "
        f"| {c['error']} | {score:.1%} |"
    )


def current(rows: dict[str, dict], tests_ref: str | None = None, sample: int | None = None) -> list[dict]:
    """The rows that still describe the code and tests: their mutant still exists and, where the row carries
    a fingerprint, neither the file nor the group's tests changed since."""
    live, stale, carried = [], 0, 0
    for group, spec in GROUPS.items():
        chosen = {m.key for m in group_mutants(group, ROOT, sample)}
        for path in spec["sources"]:
            fp, src = fingerprint(group, path, tests_ref=tests_ref), source_hash(path)
            for m in mutants(path, (ROOT / path).read_text()):
                if m.key not in chosen:
                    continue
                row = rows.get(m.key)
                if row is None:
                    continue
                pinned = tests_ref is not None and row.get("src") == src  # the suite cannot have changed
                if row.get("fp", fp) != fp and not pinned:
                    if row["verdict"] in ("killed", "timeout") and row.get("src") == src:
                        carried += 1  # killed by an earlier suite; tests were only added since
                    else:
                        stale += 1
                        continue
                live.append(row)
    if carried:
        print(f"({carried} kills carried over from an earlier suite on unchanged files: --keep-killed)")
    if stale:
        print(
            f"({stale} results left out: their file or tests changed since they ran; `run` again to redo them)"
        )
    return live


def cmd_report(args: argparse.Namespace) -> None:
    rows = current(read_results(Path(args.out)), args.tests_ref, args.sample)
    if not rows:
        raise SystemExit(f"{args.out} holds no current results; run `python tools/mutants/cli.py run` first.")
    lines, survivors = score_table(rows, equivalent_keys())
    print("\n".join(lines))
    print(f"\n{len(survivors)} surviving mutants (not marked equivalent):")
    for row in sorted(survivors, key=lambda r: (r["path"], r["line"])):
        print(
            f"  {row['key']}  {row['path']}:{row['line']} [{row['op']}, {row['verdict']}] "
            f"{row['before']!r} -> {row['after']!r}"
        )


def _scores(rows: list[dict], equivalent: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """file and group -> (mutants scored, killed or timed out, equivalent)."""
    out: dict[str, list[int]] = {}
    for row in rows:
        if row["verdict"] == "invalid":
            continue
        for name in (row["path"], row.get("group") or group_of(row["path"]), "core"):
            n = out.setdefault(name, [0, 0, 0])
            if row["key"] in equivalent:
                n[2] += 1
            else:
                n[0] += 1
                n[1] += row["verdict"] in ("killed", "timeout")
    return {k: tuple(v) for k, v in out.items()}


def cmd_compare(args: argparse.Namespace) -> None:
    """Markdown: the score of each group (and file) under two suites, on the same mutants."""
    equivalent = equivalent_keys()
    before = _scores(current(read_results(Path(args.before)), args.before_tests_ref, args.sample), equivalent)
    after = _scores(current(read_results(Path(args.out)), None, args.sample), equivalent)
    print("| group / file | mutants (equivalent) | before: killed | before | after: killed | after |")
    print("|---|---:|---:|---:|---:|---:|")
    names = [n for g, spec in GROUPS.items() for n in (g, *spec["sources"])] + ["core"]
    for name in names:
        if name not in after and name not in before:
            continue
        b, a = before.get(name, (0, 0, 0)), after.get(name, (0, 0, 0))
        label = f"**{name}**" if name in GROUPS or name == "core" else name
        pct = lambda x: f"{x[1] / x[0]:.1%}" if x[0] else "—"  # noqa: E731
        print(f"| {label} | {a[0] + a[2]} ({a[2]}) | {b[1]}/{b[0]} | {pct(b)} | {a[1]}/{a[0]} | {pct(a)} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="mutants per file")
    p.add_argument("--group", action="append", choices=list(GROUPS))
    p = sub.add_parser("run", help="run the mutants (resumes from --out)")
    p.add_argument("--group", action="append", choices=list(GROUPS))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument(
        "--sample", type=int, default=None, help="at most this many mutants per group (fixed subset)"
    )
    p.add_argument(
        "--tests-ref", default=None, help="take tests/ from this git commit (to score an old suite)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--workdir", default=None)
    p.add_argument(
        "--keep-killed",
        action="store_true",
        help="after adding tests: rerun only survivors of unchanged files",
    )
    p = sub.add_parser("report", help="score per group and file; survivors")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument(
        "--tests-ref", default=None, help="the results were run with `run --tests-ref` this commit"
    )
    p.add_argument("--sample", type=int, default=None, help="score only this fixed subset per group (as run)")
    p = sub.add_parser(
        "compare", help="per-group scores of an old suite (--before) and the current one (--out)"
    )
    p.add_argument("--before", required=True)
    p.add_argument("--before-tests-ref", required=True, help="the commit whose tests/ the --before run used")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--sample", type=int, default=None)
    args = parser.parse_args()
    {"list": cmd_list, "run": cmd_run, "report": cmd_report, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    main()
