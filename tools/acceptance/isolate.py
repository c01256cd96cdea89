"""One process per check group, so that nothing one check does can cost the rows of another.

A sticky CUDA error (a device-side assert, an illegal address) leaves the process's CUDA context unusable:
every later CUDA call raises again, so the checks after it in the same process would all FAIL for a
reason that is not theirs, and a crash (a segfault in a kernel library, the OOM killer) would lose every
row still to come. Here each group runs in a child process forked from a ``multiprocessing``
forkserver that has imported torch and the checks once (and never touched CUDA), so a group starts in
milliseconds with a fresh CUDA context, and the parent:

- reads the group's rows from a JSON file the child writes when the group ends (``run_group``);
- turns a child that died (signal, non-zero exit, no rows file) into one FAIL row naming the exit and the
  last line the child printed;
- kills the child's whole process group (DDP workers, DataLoader workers included) at the deadline and
  records the group as WARN ("killed at --deadline-s"), so that ``--deadline-s`` caps the run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.acceptance.runner import Context, Row, read_rows, run_check, write_json

# Imported once by the forkserver, so that each group's process starts with them already loaded. A module
# that fails to import here is simply imported again by the child (where its error becomes a FAIL row).
PRELOAD = [
    "torch",
    "tools.acceptance.preload",
]
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the process to be reaped


@dataclass
class Group:
    """A named check: ``target`` is ``"package.module:function"``, the check itself, or with ``arg`` a
    factory called with it that returns the check (``training.model_check(model name)``)."""

    name: str
    target: str
    arg: str | None = None


@dataclass
class Outcome:
    rows: list[Row]
    seconds: float
    exitcode: int | None
    killed: bool = False
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_CONTEXT: Any = None


def _mp_context():
    global _CONTEXT
    if _CONTEXT is None:
        # The forkserver must never initialise the CUDA driver (a child forked after cuInit cannot use
        # CUDA): should an import there ask torch.cuda.is_available(), NVML answers instead of cuInit.
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def resolve(group: Group):
    """The check function of ``group`` (in the child)."""
    import importlib

    module, fn = group.target.split(":")
    found = getattr(importlib.import_module(module), fn)
    return found if group.arg is None else found(group.arg)


def child_main(group: Group, params: dict[str, Any], rows_path: str, log_path: str) -> None:
    """Entry point of a group's process: own process group, output to ``log_path``, rows to ``rows_path``.

    Exit status 0, or 3 when the device was unusable after the check (its rows are written first)."""
    os.setpgid(0, 0)  # the parent kills this group (and whatever it spawned) at the deadline
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import torch

    device = torch.device("cuda", 0) if params["device"] == "cuda" else torch.device("cpu")
    ctx = Context(
        device=device,
        tiny=params["tiny"],
        compile_models=set(params["compile_models"]),
        deadline=time.perf_counter() + params["seconds_left"],
        shared=dict(params.get("shared") or {}),
    )
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        check = resolve(group)
    except Exception as error:  # noqa: BLE001 - a check that cannot even start is one FAIL row
        traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0][:200]
        rows = [Row(group.name, "FAIL", note=f"could not start: {type(error).__name__}: {first}")]
    else:
        rows = run_check(group.name, check, ctx)
    write_json(rows, {"group": group.name}, rows_path)
    os._exit(3 if any(r.name.endswith(".device_after") for r in rows) else 0)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _kill_group(proc) -> None:
    """SIGKILL the child's process group (its own pid), or the child alone if it has none yet."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
                return
        except ProcessLookupError:
            return
        proc.kill()


def _tail(text: str, lines: int = 1) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def run_group(group: Group, params: dict[str, Any], timeout: float) -> Outcome:
    """Run ``group`` in its own process for at most ``timeout`` seconds; never raises for what the
    check does (a death or a kill becomes a row)."""
    ctx = _mp_context()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="acceptance-") as tmp:
        rows_path, log_path = str(Path(tmp) / "rows.json"), str(Path(tmp) / "log.txt")
        Path(log_path).touch()
        params = {**params, "seconds_left": max(0.0, timeout)}
        proc = ctx.Process(target=child_main, args=(group, params, rows_path, log_path), name=group.name)
        killed = False
        try:
            proc.start()
            proc.join(max(0.0, timeout))
            if proc.is_alive():
                killed = True
                _kill_group(proc)
                proc.join(KILL_WAIT_S)
        finally:
            if proc.is_alive():  # KeyboardInterrupt or an error here: leave no orphan behind
                _kill_group(proc)
                proc.join(KILL_WAIT_S)
        seconds = time.perf_counter() - start
        # a group that spawned workers of its own (DDP, DataLoader) leaves none behind either
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log = Path(log_path).read_text(errors="replace")
        rows = read_rows(rows_path) if Path(rows_path).exists() else []
    last = _tail(log)[:200]
    if killed:
        rows.append(
            Row(
                group.name,
                "WARN",
                note=f"killed at --deadline-s after {seconds:.0f} s, unfinished; run it alone: "
                f"--only {group.name} --deadline-s 600",
            )
        )
    elif not rows:
        rows.append(
            Row(
                group.name,
                "FAIL",
                note=f"the check's process died ({describe_exit(proc.exitcode)}) before reporting"
                + (f": {last}" if last else ""),
            )
        )
    elif proc.exitcode not in (0, 3):
        rows.append(
            Row(
                f"{group.name}.process",
                "FAIL",
                note=f"the check's process ended with {describe_exit(proc.exitcode)}",
            )
        )
    return Outcome(rows, seconds, proc.exitcode, killed, log)
