"""The trainer's defaults, value by value: TrainerConfig mirrors configs/trainer/default.yaml (a wrong
default in either would change every run that does not set it), and a run without a seed uses seed 0."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
import yaml

from experiments.loaders import train_loader
from experiments.tasks import build_task
from experiments.trainer import Trainer, TrainerConfig

ROOT = Path(__file__).resolve().parents[1]


def test_trainer_config_defaults_mirror_the_yaml():
    """Every field has the yaml's default, except epochs (each model/experiment file sets its own)."""
    configured = yaml.safe_load((ROOT / "configs" / "trainer" / "default.yaml").read_text())
    defaults = {f.name: f.default for f in fields(TrainerConfig)}
    assert set(defaults) == set(configured)
    assert configured.pop("epochs") == 80 and defaults.pop("epochs") == 1
    assert defaults == configured


def _trainer(tmp_path, **kwargs) -> Trainer:
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    model = torch.nn.Linear(4, 3)
    task = build_task("classification", num_classes=3)
    return Trainer(
        task=task, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_data=train_loader(data, task.collate, 4, seed=0), eval_data=[], lr_factor=lambda step: 1.0,
        run_dir=tmp_path, config=TrainerConfig(device="cpu"), **kwargs,
    )  # fmt: skip


def test_the_seed_comes_from_the_argument_then_the_run_info_then_zero(tmp_path):
    assert _trainer(tmp_path, seed=7, info={"seed": 3}).seed == 7
    assert _trainer(tmp_path, info={"seed": 3}).seed == 3
    assert _trainer(tmp_path).seed == 0
