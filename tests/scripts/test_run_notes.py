"""scripts/run_notes.py: the hardware/load/wall lines of NOTES.txt that make_tables puts in table headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import run_notes
from scripts.make_tables import experiment_notes
from scripts.results_io import Run


def test_start_and_end_lines_give_hardware_load_and_wall(tmp_path: Path) -> None:
    folder = tmp_path / "claims_fig5"
    start = run_notes.note(folder, "start", "sweep A", now=1_000_000.0)
    end = run_notes.note(folder, "end", "sweep A", now=1_000_000.0 + 90 * 60)
    assert "sweep A: started" in start and "logical cores" in start and "load average at start" in start
    assert "90.0 min wall since its start" in end and "load average at end" in end
    assert (folder / "NOTES.txt").read_text().splitlines() == [start, end]
    # make_tables reads them from <experiment>/NOTES.txt for the run <experiment>/<model>/<opt>/seed<k>
    run = Run(
        folder / "digits_cnn" / "adamx" / "seed0", "claims_fig5", "digits_cnn", "adamx", 0, "finished", None
    )
    assert experiment_notes([run]) == [start, end]


def test_end_without_start_says_so(tmp_path: Path) -> None:
    assert "wall time unknown (no start note)" in run_notes.note(tmp_path, "end", "x")
    with pytest.raises(ValueError, match="'middle' is neither"):
        run_notes.note(tmp_path, "middle", "x")
