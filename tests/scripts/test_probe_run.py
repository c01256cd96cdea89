"""scripts/probe_run.py and scripts/reset_v.py: probes through the trainer's hooks, in-process, tiny runs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from adamx import AdamX
from experiments.train.trainer import Hooks
from scripts import probe_run, reset_v
from tests.helpers import compose_config, torch_threads

TINY = ["experiment=claims_fig5", "optimizer=adamx", "seed=0", "trainer.epochs=3", "trainer.eval_every=2"]
RUN = Path("claims_fig5/digits_cnn/adamx/seed0")


def run(root: Path, *extra: str) -> Path:
    cfg = compose_config([*TINY, f"runs_root={root}", *extra])
    with torch_threads(1):
        assert probe_run.execute(cfg, []) == 0
    return next(root.glob("*/digits_cnn/adamx/seed0"))


@pytest.mark.slow
def test_probes_write_their_files_and_change_nothing_that_is_trained(tmp_path: Path) -> None:
    probed = run(tmp_path / "a", "trainer.optim_stats_every=22", "trainer.full_loss_steps=[44,100]")
    plain = run(
        tmp_path / "b",
        "trainer.optim_stats_every=0",
        "trainer.full_loss_steps=[]",
        "trainer.full_loss_at_eval=false",
    )
    cols = ["step", "epoch", "loss", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(probed / "train.csv")[cols], pd.read_csv(plain / "train.csv")[cols]
    )
    assert not (plain / "optim.csv").exists()
    optim = pd.read_csv(probed / "optim.csv")
    assert list(optim["step"]) == [22, 22, 44, 44, 66, 66, 88, 88, 110, 110, 132, 132]
    assert set(optim["optimizer"]) == {"AdamX"} and (optim["lr"] == 2.2e-5).all()
    full = pd.read_csv(probed / "full_loss.csv")
    # landmarks at 44 and 100 (44 is also epoch 1's end, but no evaluation there), evaluations at 88 and 132
    assert list(zip(full["step"], full["at"])) == [
        (44, "landmark"),
        (88, "eval"),
        (100, "landmark"),
        (132, "eval"),
    ]
    assert list(full["epoch"]) == [1, 2, 3, 3] and (full["samples"] == 1437).all()
    assert full["full_loss"].is_monotonic_decreasing  # a constant small LR on a fresh CNN: it still falls


@pytest.mark.slow
def test_resumed_run_keeps_probe_rows_up_to_last_pt_only(tmp_path: Path, monkeypatch) -> None:
    original = probe_run.Probes.hooks

    def stop_at_60(trainer) -> None:
        if trainer.step == 60:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer commits last.pt at step 60 and stops

    monkeypatch.setattr(probe_run.Probes, "hooks", lambda self: Hooks(on_step_end=stop_at_60))
    cfg = compose_config([*TINY, f"runs_root={tmp_path}", "trainer.optim_stats_every=22"])
    with torch_threads(1):
        assert probe_run.execute(cfg, []) == 130
    folder = tmp_path / RUN
    assert list(pd.read_csv(folder / "optim.csv")["step"]) == [22, 22, 44, 44]
    with open(folder / "optim.csv", "a") as handle:  # a row past last.pt (a kill after a probe's write)
        handle.write("66" + ",0" * 20 + "\n")
    monkeypatch.setattr(probe_run.Probes, "hooks", original)
    with torch_threads(1):
        assert probe_run.execute(cfg, []) == 0
    optim = pd.read_csv(folder / "optim.csv")
    assert list(optim["step"]) == [22, 22, 44, 44, 66, 66, 88, 88, 110, 110, 132, 132]
    assert (optim["optimizer"] == "AdamX").all()  # the planted row (optimizer "0") was dropped


@pytest.mark.slow
def test_reset_v_restarts_the_state_at_its_step(tmp_path: Path) -> None:
    reset = run(tmp_path / "r", "+probe=reset_v", "probes.reset_v_at=88")
    plain = run(tmp_path / "p", "trainer.optim_stats_every=0")
    assert json.loads((reset / "reset_v.json").read_text())["reset_at"] == 88
    state = torch.load(reset / "last.pt", weights_only=True)["optimizer"]["state"]
    assert {int(s["step"]) for s in state.values()} == {132 - 88}  # restarted at 88, then 44 steps
    a, b = pd.read_csv(reset / "train.csv"), pd.read_csv(plain / "train.csv")
    assert (a["loss"][:88] == b["loss"][:88]).all()  # the same run up to the reset
    assert (a["loss"][88:] != b["loss"][88:]).any()


def fake_trainer(tmp_path: Path, step: int, optimizer_steps: int) -> SimpleNamespace:
    model = nn.Linear(3, 1)
    opt = AdamX(model.parameters(), lr=1e-3)
    for _ in range(optimizer_steps):
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
    saves = []
    return SimpleNamespace(
        step=step, steps_per_epoch=4, optimizer=opt, run_dir=tmp_path, main=True, save=lambda: saves.append(1)
    )


def test_reset_v_refuses_a_missed_reset_and_recognises_a_committed_one(tmp_path: Path) -> None:
    probe = reset_v.ResetV(8)
    with pytest.raises(reset_v.ResetMissed, match="passed step 8 without its v reset"):
        probe.on_epoch_end(fake_trainer(tmp_path, step=12, optimizer_steps=12), 3)
    probe.on_epoch_end(fake_trainer(tmp_path, step=12, optimizer_steps=4), 3)  # restarted at 8: 4 steps since
    assert json.loads((tmp_path / reset_v.MARKER).read_text())["recovered"] is True
    trainer = fake_trainer(tmp_path / "x", step=8, optimizer_steps=8)
    (tmp_path / "x").mkdir()
    probe.on_epoch_end(trainer, 2)
    assert reset_v.optimizer_step_count(trainer.optimizer) == 0
    assert all(float(s["exp_avg_sq"].abs().sum()) == 0.0 for s in trainer.optimizer.state.values())
    with pytest.raises(ValueError, match="reset_v_at=6 is not an epoch end"):
        reset_v.ResetV(6).on_epoch_end(fake_trainer(tmp_path, step=8, optimizer_steps=8), 2)
    sgd = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer is SGD"):
        reset_v.reset_adaptive_state(sgd)


def test_unknown_probe_key_is_one_sentence(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, f"runs_root={tmp_path}", "+probes.optim_every=3"])
    assert probe_run.execute(cfg, []) == 2
    assert not any(tmp_path.iterdir()) if tmp_path.exists() else True
