"""Which tests run which lines: one pytest run under coverage with a context per test (pytest-cov's
`--cov-context=test`), so each mutant runs only the tests that execute its statement, fastest first.

A mutant whose statement no test executes in-process is "uncovered": it counts as a survivor without being
run (conservative: a line reached only from a subprocess, or only from a slow test, scores as a gap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = "tools.mutants.timing_plugin"


def build(root: Path, tests: list[str], sources: list[str], dest: Path) -> dict:
    """Run `tests` (the not-slow ones) in the repo copy `root` under coverage; return and save the map:
    {"lines": {source: {line: [nodeid, ...]}}, "seconds": {nodeid: seconds}}."""
    present = [t for t in tests if (root / t).exists()]
    dest = dest.resolve()  # pytest runs in the copy `root`: relative paths would land there
    data_file = dest.with_suffix(".coverage")
    timing_file = dest.with_suffix(".timing.json")
    env = {
        **os.environ,
        "COVERAGE_FILE": str(data_file),
        "MUTATION_TIMING": str(timing_file),
        "PYTHONPATH": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *present,
        "-q",
        "-m",
        "not slow and not gpu",
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        "--hypothesis-seed=0",
        "-W",
        "ignore",
        "--cov-context=test",
        "--cov-report=",
        *[f"--cov={root / s}" for s in sorted({str(Path(s).parent) for s in sources})],
    ]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"the unmutated tests fail in {root}; fix them first:\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
        )

    import coverage

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    lines: dict[str, dict[int, list[str]]] = {}
    at_import: dict[str, list[int]] = {}  # lines run outside any test (imports), maybe by tests too
    for source in sources:
        by_line = data.contexts_by_lineno(str((root / source).resolve()))
        at_import[source] = sorted(int(n) for n, ctx in by_line.items() if "" in ctx)
        lines[source] = {
            int(n): sorted({c.rsplit("|", 1)[0] for c in ctx if c}) for n, ctx in by_line.items()
        }
    seconds = json.loads(timing_file.read_text())
    result = {"lines": lines, "at_import": at_import, "seconds": seconds}
    dest.write_text(json.dumps(result))
    return result


def covering(cmap: dict, path: str, lines: tuple[int, int]) -> list[str]:
    """The test functions that execute any line of a mutant's statement (of its function, for a default
    argument; of the file, for code run only at import), fastest first (by the time of all their cases).
    ``at_import`` lists the lines run outside any test (also when a test re-runs them); a line never run
    is absent from the map."""
    by_line = {int(n): t for n, t in cmap["lines"].get(path, {}).items()}
    span = range(lines[0], lines[1] + 1)
    imported = set(cmap.get("at_import", {}).get(path, []))
    if lines != (0, 0) and any(n in imported for n in span):
        span = by_line  # run at import (a helper a module constant calls): any test of the file
    seconds: dict[str, float] = {}
    for n in by_line if lines == (0, 0) else span:
        for nodeid in by_line.get(n, []):
            seconds.setdefault(_function(nodeid), 0.0)
    for nodeid, s in cmap["seconds"].items():
        if _function(nodeid) in seconds:
            seconds[_function(nodeid)] += s
    return sorted(seconds, key=lambda t: (seconds[t], t))


def _function(nodeid: str) -> str:
    """A parametrized test's function (all its cases): case ids with quotes, brackets or escapes do not
    always survive the command line, and a function is the unit a slip in shared code shows in."""
    return nodeid.split("[", 1)[0]


def cost(cmap: dict, tests: list[str]) -> float:
    """Seconds the given test functions took in the coverage run (all their cases)."""
    wanted = set(tests)
    return sum(s for nodeid, s in cmap["seconds"].items() if _function(nodeid) in wanted)
