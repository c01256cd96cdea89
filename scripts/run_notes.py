"""Hardware, load and wall time of a sweep, appended to ``<runs_root>/<experiment>/NOTES.txt``.

make_tables.py puts every line of that file into the experiment's table headers (what the run files cannot
say). ``start`` records the CPU, the core count, the load average and the time; ``end`` the load average and
the wall time since the matching ``start`` (kept in ``.notes_start`` beside NOTES.txt).

    python -m scripts.run_notes runs/claims/claims_fig5 start --label "claims_fig5 sweep"
    python -m scripts.run_notes runs/claims/claims_fig5 end --label "claims_fig5 sweep"
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

START_FILE = ".notes_start"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor(), else 'unknown CPU'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def note(folder: Path | str, which: str, label: str, now: float | None = None) -> str:
    """Append the ``start`` or ``end`` line to ``folder``/NOTES.txt and return it."""
    if which not in ("start", "end"):
        raise ValueError(f"run_notes: {which!r} is neither 'start' nor 'end'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    if which == "start":
        (folder / START_FILE).write_text(repr(now))
        line = (
            f"{label}: started {_stamp(now)} on {cpu_model()} ({os.cpu_count()} logical cores), "
            f"load average at start {load_average()} (1, 5, 15 min)"
        )
    else:
        try:
            started = float((folder / START_FILE).read_text())
            wall = f"{(now - started) / 60:.1f} min wall since its start"
        except (OSError, ValueError):
            wall = "wall time unknown (no start note)"
        line = f"{label}: finished {_stamp(now)}, {wall}, load average at end {load_average()} (1, 5, 15 min)"
    with open(folder / "NOTES.txt", "a") as handle:
        handle.write(line + "\n")
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="<runs_root>/<experiment>")
    ap.add_argument("which", choices=["start", "end"])
    ap.add_argument("--label", default="sweep")
    args = ap.parse_args(argv)
    print(note(args.folder, args.which, args.label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
