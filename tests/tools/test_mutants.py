"""The mutation tool (tools/mutants/cli.py): the slips it plants, what it leaves alone, and its verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT
from tools.mutants.operators import mutants
from tools.mutants.targets import GROUPS

SOURCE = textwrap.dedent(
    '''
    """Docstring 1 + 2 < 3."""
    import math


    def f(a, b=0.5, flag=True):
        """Doc."""
        if a < b and not flag:
            return -a
        opt.zero_grad()
        print("a + b", a + 1)
        a += 2
        return a * b  # a / b


    def g(x):  # mutants: skip (GPU only)
        return x + 1


    z = x // 3  # mutants: skip (documented)
    '''
)


def _edits(source: str) -> set[tuple[int, str, str]]:
    return {(m.line, m.op, m.after) for m in mutants("m.py", source)}


def test_each_operator_plants_the_expected_one_token_slip():
    """Every operator fires where it should, with exactly the replacement documented, and nowhere else."""
    assert _edits(SOURCE) == {
        (6, "number", "def f(a, b=1.0, flag=True):"),
        (6, "truth", "def f(a, b=0.5, flag=False):"),
        (8, "compare", "if a <= b and not flag:"),
        (8, "bool", "if a < b or not flag:"),
        (8, "bool", "if a < b and flag:"),
        (9, "negate", "return a"),
        (10, "call", "pass"),
        (12, "arith", "a -= 2"),
        (12, "number", "a += 3"),
        (13, "arith", "return a / b  # a / b"),
    }


def test_a_mutant_changes_one_line_and_its_key_survives_edits_elsewhere():
    """Keys name the line's text, not its number, so results stay valid when code above moves."""
    found = mutants("m.py", SOURCE)
    for m in found:
        changed = [i for i, (x, y) in enumerate(zip(SOURCE.splitlines(), m.source.splitlines())) if x != y]
        assert len(changed) == 1 and changed[0] + 1 == m.line
    shifted = mutants("m.py", "import os\n" + SOURCE)
    assert {m.key for m in shifted} == {m.key for m in found}
    assert all(m.line == n.line + 1 for m, n in zip(shifted, found))


def test_comparison_and_membership_pairs():
    """is/is not, in/not in, ==/!= and the four orderings each flip to their partner."""
    src = "r = (a is None, a is not b, a in c, a not in c, a == 1, a != 1, a > b, a >= b, a <= b)\n"
    afters = {m.after for m in mutants("m.py", src) if m.op == "compare"}
    for old, new in [
        ("a is None", "a is not None"),
        ("a is not b", "a is b"),
        ("a in c", "a not in c"),
        ("a not in c", "a in c"),
        ("a == 1", "a != 1"),
        ("a != 1", "a == 1"),
        ("a > b", "a >= b"),
        ("a >= b", "a > b"),
        ("a <= b", "a < b"),
    ]:
        assert src.strip().replace(old, new, 1) in afters, old


def test_every_core_file_parses_and_yields_mutants():
    """The configured core exists and every file in it has something to mutate (a typo'd path fails here)."""
    for group in GROUPS.values():
        for path in group["sources"]:
            assert mutants(path, (ROOT / path).read_text()), path


@pytest.mark.slow
def test_run_kills_what_the_tests_catch_and_reports_survivors(tmp_path):
    """End to end on a tiny repo: a mutant the test catches is killed, one it cannot see survives."""
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "pkg").mkdir()
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "mod.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef scale(a):\n    return a * 1\n"
    )
    (repo / "tests" / "test_mod.py").write_text(
        "from pkg.mod import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from tools.mutants import runner
        from tools.mutants.operators import mutants
        repo = Path({str(repo)!r})
        slot = runner.Slot(Path({str(tmp_path / "w0")!r}))
        runner.copy_tree(repo, slot.root, None)
        jobs = [(m, ["tests/test_mod.py"], {{}}) for m in mutants("pkg/mod.py", (repo / "pkg/mod.py").read_text())]
        timeouts = {{m.key: 60.0 for m, _, _ in jobs}}
        runner.run(jobs, [slot], timeouts, Path({str(tmp_path / "out.jsonl")!r}), lambda v: None)
        assert (slot.root / "pkg/mod.py").read_text() == (repo / "pkg/mod.py").read_text()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    verdicts = {(r["before"], r["after"]): r["verdict"] for r in rows}
    assert verdicts == {
        ("return a + b", "return a - b"): "killed",
        ("return a * 1", "return a / 1"): "survived",
        ("return a * 1", "return a * 2"): "survived",
    }


def test_covering_tests_are_those_of_the_statement_fastest_first():
    """A mutant runs the tests of its statement's lines only, fastest first; (0, 0) means the whole file."""
    from tools.mutants.coverage_map import covering

    cmap = {
        "lines": {"m.py": {"3": ["t::slow", "t::a"], "4": ["t::b"], "9": ["t::c"]}},
        "seconds": {"t::slow": 5.0, "t::a": 0.1, "t::b": 0.2, "t::c": 0.05},
    }
    assert covering(cmap, "m.py", (3, 3)) == ["t::a", "t::slow"]
    assert covering(cmap, "m.py", (4, 8)) == ["t::b"]
    assert covering(cmap, "m.py", (5, 8)) == []
    assert covering(cmap, "m.py", (0, 0)) == ["t::c", "t::a", "t::b", "t::slow"]
    # parametrized cases run as their whole function (case ids with escapes do not survive the command line)
    cmap = {
        "lines": {"m.py": {"3": ["t::p[a-\\[0\\]]", "t::q"]}},
        "seconds": {"t::p[a-\\[0\\]]": 0.1, "t::p[b]": 0.3, "t::q": 0.2},
    }
    assert covering(cmap, "m.py", (3, 3)) == ["t::q", "t::p"]
    # a line run only at import (empty list) is covered by every test of the file; a line never run is not
    cmap = {
        "lines": {"m.py": {"2": ["t::a"], "3": ["t::a"], "4": ["t::b"]}},
        "at_import": {"m.py": [2]},  # line 2 runs at import, and again inside t::a
        "seconds": {"t::a": 0.1, "t::b": 0.2},
    }
    assert covering(cmap, "m.py", (2, 2)) == ["t::a", "t::b"]
    assert covering(cmap, "m.py", (3, 3)) == ["t::a"]
    assert covering(cmap, "m.py", (7, 7)) == []


def test_function_defaults_are_covered_by_the_body_and_module_code_by_the_file():
    """A default argument is exercised when its function runs; module-level code at import, by any test."""
    src = "X = 3\n\n\ndef f(a=1):\n    return a + X\n"
    by_after = {m.after: m.lines for m in mutants("m.py", src)}
    assert by_after["X = 4"] == (0, 0)
    assert by_after["def f(a=2):"] == (5, 5)
    assert by_after["return a - X"] == (5, 5)


@pytest.mark.slow
def test_report_leaves_out_results_whose_file_or_tests_changed():
    """A result recorded against other code or other tests is stale and must not count."""
    import tools.mutants.cli as cli

    path = "experiments/tasks/segmentation/miou.py"
    m = mutants(path, (ROOT / path).read_text())[0]
    fp = cli.fingerprint("experiments.tasks.segmentation", path)
    rows = {m.key: {"key": m.key, "path": path, "verdict": "killed", "fp": fp}}
    assert len(cli.current(rows)) == 1
    rows[m.key]["fp"] = "0" * 12
    assert cli.current(rows) == []
    rows[m.key]["src"] = cli.source_hash(path)  # tests changed, file did not: a kill still stands ...
    assert len(cli.current(rows)) == 1
    rows[m.key]["verdict"] = "survived"  # ... but a survivor must run against the new tests
    assert cli.current(rows) == []
