"""scripts/tune_lr.py: the LR grid, the selection rule and the config it writes (issue 15, part 2)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from scripts import tune_lr
from scripts.results_io import find_runs


def test_grid_is_ten_log_spaced_values_over_three_decades_around_the_repro_lr() -> None:
    grid = tune_lr.lr_grid(1e-3)
    assert grid == [1e-4, 2.15e-4, 4.64e-4, 1e-3, 2.15e-3, 4.64e-3, 1e-2, 2.15e-2, 4.64e-2, 0.1]
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(math.isclose(r, 10 ** (1 / 3), rel_tol=0.01) for r in ratios)
    assert tune_lr.lr_grid(1e-4)[0] == 1e-5 and tune_lr.lr_grid(1e-2)[-1] == 1.0


def test_commands_cover_every_optimizer_seed_and_grid_point() -> None:
    cmds = tune_lr.grid_commands("runs/x", seeds=(0, 1, 2))
    assert len(cmds) == 3 * 7 and cmds[0].split().count("seed=0") == 1
    lion = [c for c in cmds if "optimizer=lion " in c]
    lion_lrs = "optimizer.lr=1e-05,2.15e-05,4.64e-05,0.0001,0.000215,0.000464,0.001,0.00215,0.00464,0.01 "
    assert len(lion) == 3 and lion_lrs in lion[0]
    assert all("experiment=claims_tune " in c and c.endswith("runs_root=runs/x") for c in cmds)


def test_select_lowest_mean_error_ties_by_loss_full_seeds_only() -> None:
    grid = {
        1e-3: [(0, 2.0, 0.10), (1, 3.0, 0.10), (2, 1.0, 0.10)],  # mean 2.0, loss 0.10
        2e-3: [(0, 2.0, 0.05), (1, 2.0, 0.05), (2, 2.0, 0.05)],  # mean 2.0, loss 0.05 -> wins the tie
        5e-3: [(0, 0.5, 0.01), (1, 0.5, 0.01)],  # best mean but a seed missing: not eligible
        1e-4: [(0, 9.0, 1.0), (1, 9.0, 1.0), (2, 9.0, 1.0)],
    }
    assert tune_lr.select(grid) == 2e-3
    assert tune_lr.select({}) is None


def test_tuned_config_keeps_weight_decay_and_momentum(tmp_path: Path) -> None:
    text = tune_lr.tuned_config({"sgd": 0.0464, "adamx": 0.00215}, "runs/claims_tune")
    cfg = yaml.safe_load(text)
    assert cfg["experiment_name"] == "claims_tuned" and cfg["trainer"]["epochs"] == 15
    assert cfg["per_optimizer"]["sgd"]["optimizer"] == {"lr": 0.0464, "weight_decay": 0.001, "momentum": 0.9}
    assert cfg["per_optimizer"]["adamx"]["optimizer"] == {"lr": 0.00215, "weight_decay": 0.01}
    assert cfg["target"] == {"metric": "top1_err", "value": 2.5}
    assert "dataset" not in cfg  # scored on the test set: no validation split


def _tuning_run(
    root: Path, lr: float, seed: int, errors: list[float], losses: list[float], status: str = "finished"
):
    """A claims_tune run directory as the trainer leaves it: config.yaml, summary.json, eval.csv per epoch."""
    import json

    path = root / f"{tune_lr.TUNE_PREFIX}_{lr:g}" / "digits_cnn" / "adamx" / f"seed{seed}"
    path.mkdir(parents=True)
    config = {"experiment_name": f"{tune_lr.TUNE_PREFIX}_{lr:g}", "seed": seed}
    config |= {"model": {"name": "digits_cnn"}, "optimizer": {"name": "adamx", "lr": lr}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "summary.json").write_text(json.dumps({"status": status}))
    rows = [f"{e + 1},{10 * (e + 1)},{err},{loss},1.0" for e, (err, loss) in enumerate(zip(errors, losses))]
    (path / "eval.csv").write_text("epoch,step,top1_err,loss,time\n" + "\n".join(rows) + "\n")
    return path


def test_selection_is_on_the_final_validation_error_not_the_best_epoch(tmp_path: Path) -> None:
    """The equal-budget claim rests on choosing each LR by its final-epoch validation error (the error a
    run ends with), not its best epoch: a fast LR that peaks early and degrades must lose."""
    for seed in (0, 1, 2):
        # 1e-2: best epoch 1.0 (lowest anywhere), final 9.0; 1e-3: best 4.0, final 4.0.
        _tuning_run(tmp_path, 1e-2, seed, [1.0, 5.0, 9.0], [0.1, 0.5, 0.9])
        _tuning_run(tmp_path, 1e-3, seed, [8.0, 6.0, 4.0], [0.8, 0.6, 0.4])
    _tuning_run(tmp_path, 1e-4, 0, [0.5, 0.5, 0.5], [0.0, 0.0, 0.0], status="failed")  # never counted
    runs = find_runs(tmp_path)
    finals = {run.config["optimizer"]["lr"]: tune_lr.final_metrics(run) for run in runs if run.seed == 0}
    assert finals == {1e-2: (9.0, 0.9), 1e-3: (4.0, 0.4), 1e-4: None}
    grid = tune_lr.grid_results(runs)["adamx"]
    assert sorted(grid) == [1e-3, 1e-2] and sorted(grid[1e-3]) == [
        (0, 4.0, 0.4),
        (1, 4.0, 0.4),
        (2, 4.0, 0.4),
    ]
    assert tune_lr.select(grid) == 1e-3
