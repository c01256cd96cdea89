"""The trainer's defaults, value by value: TrainerConfig mirrors configs/trainer/default.yaml (a wrong
default in either would change every run that does not set it), and a run without a seed uses seed 0."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml
from helpers import tiny_trainer

from experiments.trainer import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]


def test_trainer_config_defaults_mirror_the_yaml():
    """Every field has the yaml's default, except epochs (each model/experiment file sets its own)."""
    configured = yaml.safe_load((ROOT / "configs" / "trainer" / "default.yaml").read_text())
    defaults = {f.name: f.default for f in fields(TrainerConfig)}
    assert set(defaults) == set(configured)
    assert configured.pop("epochs") == 80 and defaults.pop("epochs") == 1
    assert defaults == configured


def test_the_seed_comes_from_the_argument_then_the_run_info_then_zero(tmp_path):
    assert tiny_trainer(tmp_path, seed=7, info={"seed": 3}).seed == 7
    assert tiny_trainer(tmp_path, info={"seed": 3}).seed == 3
    assert tiny_trainer(tmp_path).seed == 0
