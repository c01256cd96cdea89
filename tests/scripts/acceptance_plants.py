"""Stand-in checks for tests/scripts/test_gpu_acceptance.py, imported by name in the check groups'
processes (so they live in a module, not in the test file)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tools.acceptance.runner import Row


def ok(ctx) -> list[Row]:
    return [Row("plant.ok", "PASS", {"pid": os.getpid()})]


def ok_again(ctx) -> list[Row]:
    return [Row("plant.ok_again", "PASS", {"pid": os.getpid()})]


def fails(ctx) -> list[Row]:
    return [Row("plant.fails", "FAIL", note="a planted failure")]


def crash(ctx) -> list[Row]:
    """A process that dies outright (as a segfault in a kernel library or the OOM killer would)."""
    os.abort()


def sticky(ctx) -> list[Row]:
    """A check that leaves its device unusable (a device-side assert): the check raises, and so does
    every later synchronize in this process (stood in for by ``context_error``)."""
    import tools.acceptance.runner as runner

    runner.context_error = lambda ctx: (
        "device unusable after the check: RuntimeError: CUDA error: device-side assert"
    )
    raise RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors might be reported later")


def sleeper(directory: str):
    """A check that hangs (with a worker process of its own) until killed; it writes both pids."""

    def check(ctx) -> list[Row]:
        worker = subprocess.Popen(["sleep", "300"])
        Path(directory, "worker.pid").write_text(str(worker.pid))
        Path(directory, "check.pid").write_text(str(os.getpid()))
        time.sleep(300)
        return [Row("plant.sleeper", "PASS")]

    return check
