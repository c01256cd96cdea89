"""Figure 5 redrawn for the claims_horizon runs: forward smoothing, partial rows labelled as such."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import make_figures  # noqa: E402
from results_io import find_runs  # noqa: E402


def _run(
    root: Path, opt: str, seed: int, losses: np.ndarray, status: str, epochs: int = 0, spe: int = 0
) -> None:
    d = root / "claims_horizon" / "digits_cnn" / opt.replace("+", "_") / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {
        "experiment_name": "claims_horizon",
        "seed": seed,
        "model": {"name": "digits_cnn"},
        "optimizer": {"name": opt},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    steps = np.arange(1, len(losses) + 1)
    pd.DataFrame({"step": steps, "epoch": (steps - 1) // 10 + 1, "loss": losses}).to_csv(
        d / "train.csv", index=False
    )
    (d / "summary.json").write_text(json.dumps({"status": status, "epochs": epochs, "steps_per_epoch": spe}))


def test_finished_rows_are_seed_means_and_partial_rows_say_so(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _run(root, "adamx", 0, np.full(800, 1.0), "finished")
    _run(root, "adamx", 1, np.full(800, 3.0), "finished")
    _run(root, "adam", 0, np.full(800, 5.0), "running", epochs=200, spe=10)  # 800 of 2,000 steps
    _run(root, "adam", 1, np.full(300, 5.0), "failed")
    curves = make_figures.horizon_loss_data(find_runs(root), "claims_horizon")
    assert set(curves) == {"adamx (n=2)", "adam (1 unfinished run, to step 800)"}
    x, y = curves["adamx (n=2)"]
    assert np.allclose(y, 2.0) and x[0] == 1 and x[1] == 3  # 800 // 400 = every 2nd step, forward
    x, _ = curves["adam (1 unfinished run, to step 800)"]
    assert x[1] - x[0] == 5  # downsampled by the planned T = 2,000 // 400, not by the partial log's length


def test_smoothing_runs_forward() -> None:
    df = pd.DataFrame({"step": np.arange(1, 2001), "loss": np.r_[np.full(1000, 1.0), np.full(1000, 0.0)]})
    x, y = make_figures.smooth_loss(df)
    assert x[0] == 1 and np.all(np.diff(x) == 5)
    assert y[0] == 1.0 and y[-1] < 1e-6  # forward: starts at the first loss, ends at the last
