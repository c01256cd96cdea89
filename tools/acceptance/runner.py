"""Named checks, each isolated: a check returns rows; an exception becomes one FAIL row with its first line."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

STATUSES = ("PASS", "WARN", "FAIL", "SKIP", "INFO")


@dataclass
class Row:
    """One line of the table: a named result with its numbers."""

    name: str
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")


@dataclass
class Context:
    """What every check gets: the device, the tiny switch, and results other checks left behind."""

    device: torch.device
    tiny: bool
    compile_models: set[str]
    deadline: float = float("inf")  # time.perf_counter() after which optional work is skipped
    shared: dict[str, Any] = field(default_factory=dict)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def grade(value: float, pass_at: float, warn_at: float, higher_is_better: bool = True) -> str:
    """PASS / WARN / FAIL of ``value`` against two thresholds."""
    if higher_is_better:
        return "PASS" if value >= pass_at else "WARN" if value >= warn_at else "FAIL"
    return "PASS" if value <= pass_at else "WARN" if value <= warn_at else "FAIL"


def run_check(name: str, fn: Callable[[Context], list[Row]], ctx: Context) -> list[Row]:
    """Run one check; whatever it raises is reported, never propagated."""
    start = time.perf_counter()
    try:
        rows = list(fn(ctx))
    except Exception as error:  # noqa: BLE001 - a failing check must not stop the others
        first = (str(error).strip().splitlines() or [""])[0][:200]
        where = traceback.extract_tb(error.__traceback__)[-1]
        rows = [
            Row(
                name,
                "FAIL",
                note=f"{type(error).__name__}: {first} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
            )
        ]
    unusable = context_error(ctx)
    if unusable:  # a sticky CUDA error: this process's device is gone; its rows still go out
        rows.append(Row(f"{name}.device_after", "FAIL", note=unusable))
    elapsed = time.perf_counter() - start
    for row in rows:
        row.seconds = round(elapsed / len(rows), 2)
    return rows


def context_error(ctx: Context) -> str:
    """ "" when the device still works after a check, else the one-line error that a synchronize raises
    (a sticky CUDA error: device-side assert, illegal address; the process must end)."""
    if not ctx.cuda:
        return ""
    try:
        torch.cuda.synchronize(ctx.device)
    except Exception as error:  # noqa: BLE001 - reported as a row, never propagated
        first = (str(error).strip().splitlines() or [""])[0][:200]
        return f"device unusable after the check: {type(error).__name__}: {first}"
    return ""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def table(rows: list[Row]) -> str:
    """A fixed-width table: name, status, numbers, note."""
    width = max(len(r.name) for r in rows) if rows else 10
    lines = [f"{'check':<{width}}  {'status':<6}  {'s':>6}  numbers / note", "-" * (width + 60)]
    for r in rows:
        numbers = ", ".join(f"{k}={fmt(v)}" for k, v in r.numbers.items())
        detail = "; ".join(x for x in (numbers, r.note) if x)
        lines.append(f"{r.name:<{width}}  {r.status:<6}  {r.seconds:>6.1f}  {detail}")
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    lines.append("-" * (width + 60))
    lines.append("  ".join(f"{s} {n}" for s, n in counts.items()))
    return "\n".join(lines)


def write_json(rows: list[Row], meta: dict[str, Any], path: str) -> None:
    """Write the rows (and ``meta``) to ``path`` through a temporary file and a rename, so that a reader,
    or a run killed while writing, never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "checks": [asdict(r) for r in rows]}, f, indent=1, default=str)
    os.replace(tmp, path)


def read_rows(path: str) -> list[Row]:
    """The rows ``write_json`` wrote to ``path``."""
    with open(path) as f:
        return [Row(**r) for r in json.load(f)["checks"]]
