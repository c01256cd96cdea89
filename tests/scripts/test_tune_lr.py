"""scripts/tune_lr.py: the LR grid, the selection rule and the config it writes (issue 15, part 2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
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


# --- the command line and the tables (in-process: main(argv), stdout/stderr captured) --------------------


def test_commands_default_to_seeds_0_1_2_and_the_claims_tune_root(capsys) -> None:
    assert tune_lr.main(["commands"]) == 0
    cmds = capsys.readouterr().out.splitlines()
    assert len(cmds) == 3 * len(tune_lr.OPTIMIZERS)
    seeds = [next(w for w in c.split() if w.startswith("seed=")) for c in cmds]
    assert seeds == ["seed=0"] * 7 + ["seed=1"] * 7 + ["seed=2"] * 7  # seeds outermost
    assert all(c.startswith("OMP_NUM_THREADS=1 python run.py -m ") for c in cmds)
    assert all(c.endswith(" runs_root=runs/claims_tune") for c in cmds)


def test_help_names_the_equal_tuning_budget(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        tune_lr.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert (
        "Equal tuning budget (issue 15): a learning-rate grid per optimizer, selected on a validation split."
        in text
    )


def test_select_without_runs_says_what_to_run(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the default runs root, runs/claims_tune, does not exist here
    assert tune_lr.main(["select"]) == 1
    assert capsys.readouterr().out == (
        "No finished claims_tune runs under 'runs/claims_tune'; run the commands of `tune_lr.py commands`.\n"
    )


def test_select_prints_the_grid_and_names_the_optimizers_without_runs(tmp_path: Path, capsys) -> None:
    for seed in (0, 1):
        _tuning_run(tmp_path, 1e-3, seed, [5.0, 4.0], [0.5, 0.4])
        _tuning_run(tmp_path, 1e-2, seed, [5.0, 2.0 + seed], [0.5, 0.2])
    assert tune_lr.main(["select", "--runs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if line.startswith("| adamx")]
    assert rows == [
        "| adamx | 0.001 | 4.00 | 0.4000 | 2 |",
        "| adamx | **0.01 (grid edge)** | **2.50** | **0.2000** | 2 |",
    ]
    assert err == "no finished grid runs for adam, adax, sgd, radam, lion, sophiag\n"


def test_grid_table_rows_means_pick_and_grid_edge() -> None:
    nan = float("nan")
    results = {
        "zeta": {0.1: [(0, 5.0, 0.5)]},  # not one of the seven: after them
        "adam": {1e-4: [(0, 1.0, 0.1), (1, 2.0, 0.1)], 1e-3: [(0, 2.0, 0.2), (1, 2.0, 0.4)]},
        "adamx": {
            1e-3: [(0, 2.0, 0.1), (1, 4.0, 0.3)],
            2e-3: [(0, 1.0, 0.2), (1, 1.0, 0.2)],  # the pick, inside the grid
            5e-3: [(0, 3.0, nan), (1, 3.0, nan)],
        },
    }
    lines = tune_lr.grid_table(results).splitlines()
    assert lines[lines.index("|---|---|---|---|---|") + 1 :] == [
        "| adamx | 0.001 | 3.00 | 0.2000 | 2 |",
        "| adamx | **0.002** | **1.00** | **0.2000** | 2 |",
        "| adamx | 0.005 | 3.00 | nan | 2 |",
        "| adam | **0.0001 (grid edge)** | **1.50** | **0.1000** | 2 |",
        "| adam | 0.001 | 2.00 | 0.3000 | 2 |",
        "| zeta | **0.1 (grid edge)** | **5.00** | **0.5000** | 1 |",
    ]


CSV_HEAD = "table,optimizer,metric,which,mean,std,n,p_vs_reference,paper,values\n"


def test_comparison_table_cells_from_the_make_tables_csvs(tmp_path: Path) -> None:
    """n = 1 has no std and no p (empty CSV cells), an optimizer without rows prints dashes."""
    borrowed = tmp_path / "repro_optimizers.csv"
    borrowed.write_text(
        CSV_HEAD
        + 't,adamx,top1_err,best,2.0,0.5,5,,,"x"\n'
        + 't,adamx,top1_err,final,2.5,0.25,5,,,"x"\n'
        + 't,adamx,loss,final,0.9,0.1,5,,,"x"\n'
        + 't,adam,top1_err,best,3.0,,1,,,"x"\n'
        + 't,adam,top1_err,final,3.5,0.5,2,0.0123,,"x"\n'
    )
    tuned = tmp_path / "claims_tuned.csv"
    tuned.write_text(
        CSV_HEAD + 't,adamx,top1_err,final,1.5,0.5,5,,,"x"\n' + 't,adam,top1_err,final,,,0,,,""\n'
    )
    picks = tmp_path / "claims_tuned.yaml"
    picks.write_text(tune_lr.tuned_config({"adamx": 0.00215}, "runs/x"))
    rows = {
        line.split(" | ")[0][2:]: line
        for line in tune_lr.comparison_table(borrowed, tuned, picks).splitlines()
        if line.startswith("| ") and not line.startswith("| optimizer")
    }
    assert rows["adamx"] == (
        "| adamx | 0.001 | 2.00 ± 0.50 (n=5) | ref | 2.50 ± 0.25 (n=5) | ref | 0.00215 | — | ref "
        "| 1.50 ± 0.50 (n=5) | ref |"
    )
    assert rows["adam"] == "| adam | 0.001 | 3.00 (n=1) | — | 3.50 ± 0.50 (n=2) | 0.012 | — | — | — | — | — |"
    assert rows["sgd"] == "| sgd | 0.01 | — | — | — | — | — | — | — | — | — |"
