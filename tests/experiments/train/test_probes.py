"""trainer.optim_stats_every and trainer.full_loss_steps/full_loss_at_eval: optim.csv and full_loss.csv are
written at the asked steps, a resume cuts them to last.pt like train.csv, and a run with probes trains
exactly as one without (train.csv and the final weights are bit-identical)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import adamx
from experiments.tasks import build_task
from experiments.train.config import TrainerConfig
from experiments.train.loaders import eval_loader, train_loader
from experiments.train.trainer import Trainer


def _trainer(run_dir, **cfg):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    )
    task = build_task("classification", num_classes=3)
    opt = adamx.AdamX(adamx.decay_param_groups(model, 0.01), lr=1e-2)
    return Trainer(
        task=task,
        model=model,
        optimizer=opt,
        train_data=train_loader(data, task.collate, 4, seed=0),
        eval_data=eval_loader(data, task.collate, 8),
        lr_factor=lambda step: 1.0,
        run_dir=run_dir,
        config=TrainerConfig(**{"device": "cpu", "epochs": 2, "progress": False, "log_every": 3, **cfg}),
        train_eval_data=eval_loader(data, task.collate, 5),
    )


def test_probes_write_their_rows_and_change_nothing_trained(tmp_path):
    plain = _trainer(tmp_path / "plain")
    plain.fit()
    probed = _trainer(
        tmp_path / "probed", optim_stats_every=3, full_loss_steps=[2, 5], full_loss_at_eval=True
    )
    probed.fit()
    columns = ["step", "epoch", "loss", "lr"]  # every column but the wall time, as written (repr: exact)
    plain_rows = pd.read_csv(tmp_path / "plain/train.csv", dtype=str)[columns]
    assert (
        plain_rows.equals(pd.read_csv(tmp_path / "probed/train.csv", dtype=str)[columns])
        and len(plain_rows) == 8
    )
    for a, b in zip(plain.model.state_dict().values(), probed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "plain/optim.csv").exists() and not (tmp_path / "plain/full_loss.csv").exists()

    optim = pd.read_csv(tmp_path / "probed/optim.csv")
    assert optim.step.tolist() == [
        3,
        3,
        6,
        6,
    ]  # every 3rd of 8 steps, one row per param group (decay, no decay)
    assert optim.group.tolist() == [0, 1, 0, 1] and set(optim.optimizer) == {"AdamX"}
    assert (optim.loc[optim.group == 0, "weight_decay"] == 0.01).all()
    assert (optim.loc[optim.group == 1, "weight_decay"] == 0.0).all()
    assert (optim.sqrt_v_q50 > 0).all() and (optim.update_rms_over_lr > 0).all()

    full = pd.read_csv(tmp_path / "probed/full_loss.csv")
    assert full.step.tolist() == [2, 4, 5, 8] and full["at"].tolist() == [
        "landmark",
        "eval",
        "landmark",
        "eval",
    ]
    assert full.epoch.tolist() == [1, 1, 2, 2] and (full.samples == 16).all()
    # float64, eval mode, every sample: the same number as computing it by hand from the final weights
    model64 = probed.model.double().eval()
    xs, ys = probed.probes.train_eval_data.dataset.tensors
    with torch.no_grad():
        by_hand = torch.nn.functional.cross_entropy(model64(xs.double()), ys).item()
    assert full.full_loss.iloc[-1] == pytest.approx(by_hand, rel=1e-12)


def test_a_resume_cuts_the_probe_logs_to_last_pt(tmp_path):
    run = tmp_path / "run"
    _trainer(run, optim_stats_every=1, full_loss_steps=[1, 2, 3, 4, 5, 6, 7, 8]).fit()
    state = torch.load(run / "last.pt", weights_only=True)
    # pretend the session died after epoch 1's commit: last.pt at step 4, logs running on to step 8
    _trainer(tmp_path / "first", epochs=1, optim_stats_every=1, full_loss_steps=[1, 2, 3, 4]).fit()
    (run / "last.pt").write_bytes((tmp_path / "first/last.pt").read_bytes())
    assert int(state["step"]) == 8
    resumed = _trainer(run, optim_stats_every=1, full_loss_steps=[1, 2, 3, 4, 5, 6, 7, 8])
    assert resumed.resume()
    assert pd.read_csv(run / "optim.csv").step.max() == 4
    assert pd.read_csv(run / "full_loss.csv").step.tolist() == [1, 2, 3, 4]


def test_full_loss_without_a_training_set_loader_is_one_sentence(tmp_path):
    model = torch.nn.Linear(4, 3)
    task = build_task("classification", num_classes=3)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    with pytest.raises(
        ValueError, match=r"^trainer\.full_loss_steps/full_loss_at_eval need the training set"
    ):
        Trainer(
            task=task,
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            train_data=train_loader(data, task.collate, 4, seed=0),
            eval_data=[],
            lr_factor=lambda step: 1.0,
            run_dir=tmp_path,
            config=TrainerConfig(device="cpu", full_loss_at_eval=True),
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optim_stats_every", -1, "optim_stats_every must be >= 0"),
        ("optim_stats_eps", 0.0, "optim_stats_eps positive"),
        ("full_loss_steps", [0, 5], r"full_loss_steps must be optimizer steps >= 1, got \[0, 5\]"),
    ],
)
def test_bad_probe_settings_are_one_sentence(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**{key: value})


def test_counters_start_at_zero_and_the_resume_line_says_where(tmp_path, capsys):
    trainer = _trainer(tmp_path / "run", epochs=1)
    summary = trainer.fit()
    assert trainer.samples == 16 and summary["throughput_samples_per_s"] > 0
    assert 0 < summary["train_time_s"] <= summary["wall_time_s"] < 30
    capsys.readouterr()
    assert _trainer(tmp_path / "run", epochs=2).resume()
    assert capsys.readouterr().out.strip().endswith("from epoch 1, step 4")  # an epoch end: no "batch k"
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)
    state["step"], state["batch_in_epoch"] = 6, 2  # as if stopped mid-epoch 2
    torch.save(state, tmp_path / "run/last.pt")
    assert _trainer(tmp_path / "run", epochs=2).resume()
    assert capsys.readouterr().out.strip().endswith("from epoch 1, step 6 (batch 2 of epoch 2)")


@pytest.mark.heavy
def test_full_loss_at_eval_alone_gets_its_loader_from_the_launcher(tmp_path):
    from experiments.runs.launch import run_experiment
    from tests.helpers import compose_config

    overrides = [
        f"runs_root={tmp_path}",
        "trainer.epochs=1",
        "trainer.progress=false",
        "trainer.full_loss_at_eval=true",
    ]
    summary = run_experiment(compose_config(overrides), overrides)
    full = pd.read_csv(Path(summary["run_dir"]) / "full_loss.csv")
    assert full["at"].tolist() == ["eval"] and full.samples.iloc[0] > 1000
