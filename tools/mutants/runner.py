"""Runs mutants against their tests, several at a time, each in a forked pytest over a private copy of the repo.

The parent imports torch & co. once; every mutant is a fork of it (saving the ~2 s import), running
`pytest -x` on its group's tests inside `<workdir>/w<i>`, a copy of the tracked tree whose one source file
holds the mutant. Subprocesses a test starts (run.py) see the same copy. A mutant is killed when a test
fails, errors or times out; it survives when every test passes. Results go to a JSON-lines file as they
come, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.mutants.operators import Mutant

HEAVY = [
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "scipy.io",
    "scipy.stats",
    "omegaconf",
    "hydra",
    "matplotlib.pyplot",
    "pytest",
    "hypothesis",
    "PIL.Image",
]
KILLED_RC = {1, 2}  # tests failed / collection error (the mutant breaks an import)


@dataclass
class Slot:
    root: Path
    pid: int = 0
    started: float = 0.0
    mutant: Mutant | None = None
    fields: dict | None = None
    timeout: float = 0.0
    originals: dict[str, str] = field(default_factory=dict)  # path -> its unmutated text in this copy


def copy_tree(repo: Path, dest: Path, tests_ref: str | None) -> None:
    """The tracked (and untracked, not ignored) files of `repo` into `dest`; tests/ from `tests_ref` if given."""
    if dest.exists():
        shutil.rmtree(dest)
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if tests_ref:
        shutil.rmtree(dest / "tests")
        archive = subprocess.run(
            ["git", "archive", tests_ref, "tests"], cwd=repo, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def preload() -> None:
    """Import the heavy third-party modules once, in the parent, so every fork starts warm."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in HEAVY:
        try:
            __import__(name)
        except ImportError:
            pass
    leaked = [
        m for m in sys.modules if m.split(".")[0] in {"adamx", "experiments", "data", "models", "tests"}
    ]
    if leaked:
        raise RuntimeError(f"the parent imported project modules {leaked[:3]}; mutants would not be seen")


IN_PROCESS = "not slow and not gpu"


def pytest_args(root: Path, tests: list[str], markers: str = IN_PROCESS) -> list[str]:
    present = [t for t in tests if "::" in t or (root / t).exists()]
    return [
        *present,
        "-x",
        "-q",
        "-m",
        markers,
        "-o",
        "pythonpath=.",  # the slot's copy first on sys.path (pytest inserts it; the child runs in the slot)
        "-p",
        "no:cacheprovider",
        "--hypothesis-seed=0",
        "-W",
        "ignore",
    ]


def fork_pytest(root: Path, tests: list[str], log: Path, markers: str = IN_PROCESS) -> int:
    """Start pytest in a forked child inside `root`; return its pid (its own process group)."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child
        os.setpgrp()
        os.chdir(root)
        sys.dont_write_bytecode = True
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ["PYTHONPATH"] = str(root)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        import pytest

        rc = pytest.main(pytest_args(root, tests, markers))
        sys.stdout.flush()
        os._exit(int(rc))
    except BaseException:  # noqa: BLE001 (the child must never return into the parent's loop)
        os._exit(99)


def run(
    mutants: list[tuple[Mutant, list[str], dict]],
    slots: list[Slot],
    timeouts: dict[str, float],
    results: Path,
    progress,
) -> None:
    """Run every (mutant, tests, extra fields) job, len(slots) at a time; one JSON line per mutant to `results`."""
    queue = list(mutants)
    busy: list[Slot] = []
    free = list(slots)
    with results.open("a") as out:
        while queue or busy:
            while queue and free:
                slot = free.pop()
                mutant, tests, fields = queue.pop(0)
                try:
                    compile(mutant.source, mutant.path, "exec")
                except SyntaxError:
                    out.write(json.dumps(row(mutant, "invalid", None, 0.0, fields)) + "\n")
                    free.append(slot)
                    continue
                target = slot.root / mutant.path
                slot.originals.setdefault(mutant.path, target.read_text())
                target.write_text(mutant.source)
                slot.mutant, slot.fields, slot.started = mutant, fields, time.monotonic()
                slot.timeout = timeouts[mutant.key]
                log = slot.root.parent / f"{slot.root.name}.log"
                slot.pid = fork_pytest(slot.root, tests, log, fields.get("markers", IN_PROCESS))
                busy.append(slot)
            time.sleep(0.02)
            for slot in list(busy):
                done, status = os.waitpid(slot.pid, os.WNOHANG)
                elapsed = time.monotonic() - slot.started
                if not done and elapsed < slot.timeout:
                    continue
                if not done:
                    os.killpg(slot.pid, signal.SIGKILL)
                    os.waitpid(slot.pid, 0)
                    verdict, rc = "timeout", None
                else:
                    rc = os.waitstatus_to_exitcode(status)
                    verdict = "killed" if rc in KILLED_RC else "survived" if rc == 0 else "error"
                m = slot.mutant
                (slot.root / m.path).write_text(slot.originals[m.path])
                out.write(json.dumps(row(m, verdict, rc, elapsed, slot.fields)) + "\n")
                out.flush()
                busy.remove(slot)
                free.append(slot)
                progress(verdict)


def row(m: Mutant, verdict: str, rc: int | None, seconds: float, fields: dict) -> dict:
    """One line of the results file."""
    return {
        "key": m.key,
        "path": m.path,
        "line": m.line,
        "op": m.op,
        "before": m.before,
        "after": m.after,
        "verdict": verdict,
        "rc": rc,
        "seconds": round(seconds, 2),
        **fields,
    }
