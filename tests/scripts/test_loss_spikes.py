"""scripts/loss_spikes.py: spike epochs, the worst one and exactly-zero losses from train.csv (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from scipy import stats

from scripts import loss_spikes

# 5 epochs x 4 steps. Epoch 2 (ends at step 8) spikes but does not end after step 8; epoch 4 spikes
# (mean 0.75); epoch 5's mean is exactly the threshold, which is not a spike; two losses are exactly 0.
LOSSES = [1.0, 1.0, 1.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.0, 0.1, 0.1, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


def write_run(root: Path, opt: str, seed: int, losses: list[float], status: str = "finished") -> None:
    d = root / "claims_horizon" / "digits_cnn" / opt / f"seed{seed}"
    d.mkdir(parents=True)
    cfg = {"experiment_name": "claims_horizon", "seed": seed, "model": {"name": "digits_cnn"}}
    (d / "config.yaml").write_text(yaml.safe_dump({**cfg, "optimizer": {"name": opt}}))
    rows = [f"{i + 1},{i // 4 + 1},{loss},0.001,0.1" for i, loss in enumerate(losses)]
    (d / "train.csv").write_text("step,epoch,loss,lr,time\n" + "\n".join(rows) + "\n")
    (d / "summary.json").write_text(json.dumps({"status": status}))


def test_counts_spike_epochs_after_the_step_above_the_threshold_and_zero_losses(tmp_path: Path) -> None:
    write_run(tmp_path, "adamx", 0, LOSSES)
    run = loss_spikes.find_runs(tmp_path)[0]
    got = loss_spikes.run_spikes(run.read_train(), after=8, threshold=0.5)
    assert got == {"spike_epochs": 1, "worst_loss": 0.75, "worst_step": 16, "zero_steps": 2}
    assert loss_spikes.run_spikes(run.read_train(), after=7, threshold=0.5)["spike_epochs"] == 2
    assert loss_spikes.run_spikes(run.read_train(), after=8, threshold=0.49)["spike_epochs"] == 2


def test_table_lists_seeds_in_order_and_skips_unfinished_runs(tmp_path: Path) -> None:
    write_run(tmp_path, "adam", 1, [0.0] * 20)
    write_run(tmp_path, "adam", 0, LOSSES)
    write_run(tmp_path, "adam", 2, [5.0] * 20, status="running")
    out = tmp_path / "tables"
    assert (
        loss_spikes.main(["--runs", str(tmp_path), "--after", "8", "--threshold", "0.5", "--out", str(out)])
        == 0
    )
    text = (out / "claims_horizon_spikes.md").read_text()
    assert (
        "| adam | 0,1 | 1, 0 | 0.5 | — | — | — | 0.75 (16), 0 (12) | 2, 20 |" in text
    )  # no adamx runs: no p
    assert (out / "claims_horizon_spikes.csv").read_text().splitlines()[1] == (
        'claims_horizon,adam,"0;1","1;0","2;20",8,0.5'
    )


def test_p_value_is_welch_of_the_spike_counts_vs_the_reference(tmp_path: Path) -> None:
    spiky = [1.0] * 20  # 3 spike epochs after step 8 at threshold 0.5
    for seed, losses in enumerate([LOSSES, spiky, spiky]):  # adam: 1, 3, 3
        write_run(tmp_path, "adam", seed, losses)
    for seed, losses in enumerate([LOSSES, LOSSES, spiky]):  # adamx (reference): 1, 1, 3
        write_run(tmp_path, "adamx", seed, losses)
    text = loss_spikes.spikes_table(loss_spikes.find_runs(tmp_path), "claims_horizon", 8, 0.5)
    p = stats.ttest_ind([1, 3, 3], [1, 1, 3], equal_var=False).pvalue
    mw = stats.mannwhitneyu([1, 3, 3], [1, 1, 3], alternative="two-sided", method="exact").pvalue
    assert f"| adam | 0,1,2 | 1, 3, 3 | 2.3 | {p:.2g} | {mw:.2g} | {p:.2g} |" in text  # one test: Holm = p
    assert "| adamx | 0,1,2 | 1, 1, 3 | 1.7 | ref | ref | ref |" in text


def test_holm_runs_across_the_rows_of_the_table(tmp_path: Path) -> None:
    spiky = [1.0] * 20
    for seed in range(3):
        write_run(tmp_path, "adamx", seed, LOSSES)  # 1 spike epoch each
        write_run(tmp_path, "adam", seed, spiky if seed else LOSSES)  # 1, 3, 3
        write_run(tmp_path, "adax", seed, spiky if seed < 2 else LOSSES)  # 3, 3, 1
    text = loss_spikes.spikes_table(loss_spikes.find_runs(tmp_path), "claims_horizon", 8, 0.5)
    p_adam = stats.ttest_ind([1, 3, 3], [1, 1, 1], equal_var=False).pvalue
    assert "family (2 tests: every row vs adamx)" in text
    # two rows with the same counts and so the same p: Holm multiplies the pair by 2 (and by 1, kept monotone)
    holm = min(1.0, 2 * p_adam)
    for name in ("adam", "adax"):
        line = next(x for x in text.splitlines() if x.startswith(f"| {name} |"))
        cells = line.split(" | ")
        assert (cells[4], cells[6]) == (f"{p_adam:.2g}", f"{holm:.2g}")


def test_no_finished_runs_says_so(tmp_path: Path, capsys) -> None:
    assert loss_spikes.main(["--runs", str(tmp_path / "none")]) == 1
    assert "No finished 'claims_horizon' runs" in capsys.readouterr().out
