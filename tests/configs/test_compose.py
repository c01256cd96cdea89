"""Every optimizer x model config composes and instantiates; experiments merge per-optimizer settings;
unknown names fail with Hydra's list of options; the run directory follows the config.

The authors' single-seed protocol is one override away: ``+protocol=authors`` (configs/protocol/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

import experiments.runs.rundir  # noqa: F401  (path_safe resolver)
from experiments.runs.build import (
    apply_per_optimizer,
    build_optimizer,
    hessian_update_interval,
    model_kwargs,
    optimizer_hparams,
)
from experiments.runs.rundir import run_dir
from models import MODELS, build_model
from tests.helpers import CONFIGS, compose_config

# ---------------------------------------------------------------- from test_configs.py: Every optimizer x model config composes and instantiates; experiments merge per-


OPTIMIZERS = sorted(p.stem for p in (CONFIGS / "optimizer").glob("*.yaml"))
MODEL_CONFIGS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
# Class counts of the data sets models default to (composing needs no data; building a head needs the count).
NUM_CLASSES = {"digits": 10, "cifar100": 100, "voc": 20, "sbd": 21}


def test_config_groups_are_all_present():
    assert {"adamx", "adam", "adax", "sgd", "radam", "lion", "sophiag"} <= set(OPTIMIZERS)
    assert "digits_cnn" in MODEL_CONFIGS
    assert {"linear_to_min", "constant"} <= {p.stem for p in (CONFIGS / "schedule").glob("*.yaml")}


def test_default_is_the_digits_demo_with_adamx_and_eq15():
    cfg = compose_config()
    assert (cfg.optimizer.name, cfg.model.name, cfg.dataset.name, cfg.task.name) == (
        "adamx",
        "digits_cnn",
        "digits",
        "classification",
    )
    assert (
        cfg.schedule.name == "linear_to_min" and cfg.trainer.epochs == 30
    )  # the model file wins over trainer/


@pytest.mark.parametrize("model_name", MODEL_CONFIGS)
@pytest.mark.heavy
def test_model_config_composes_with_every_optimizer_and_instantiates(model_name):
    base = compose_config([f"model={model_name}"])
    assert base.model.name in MODELS, f"configs/model/{model_name}.yaml names an unregistered model"
    assert base.dataset.name in NUM_CLASSES, f"add {base.dataset.name!r}'s class count to NUM_CLASSES"
    # Built once (on the meta device: shapes and parameter groups, no memory), then every optimizer on it.
    with torch.device("meta"):
        model = build_model(base.model.name, NUM_CLASSES[base.dataset.name], **model_kwargs(base.model))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 0
    for opt in OPTIMIZERS:
        cfg = compose_config([f"model={model_name}", f"optimizer={opt}"])
        assert cfg.model == base.model and cfg.dataset.name == base.dataset.name
        optimizer = build_optimizer(model, cfg.optimizer)
        grouped = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        assert grouped == n_params, f"{opt} on {model_name}: param groups miss parameters"
        decays = {g["weight_decay"] for g in optimizer.param_groups}
        assert 0.0 in decays or cfg.optimizer.weight_decay == 0
        assert all(g["lr"] == cfg.optimizer.lr for g in optimizer.param_groups)
        assert (hessian_update_interval(cfg.optimizer) is not None) == (opt == "sophiag")


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_every_optimizer_takes_a_real_step_on_the_demo_model(opt):
    cfg = compose_config([f"optimizer={opt}"])
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, **model_kwargs(cfg.model))
    optimizer = build_optimizer(model, cfg.optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    if hasattr(optimizer, "update_hessian"):
        optimizer.update_hessian()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_table4_composes_from_optimizer_and_model_alone():
    cfg = compose_config(["optimizer=adamx", "model=swinv2_s"])
    assert (cfg.model.name, cfg.dataset.name, cfg.task.name) == ("swinv2_s", "cifar100", "classification")
    assert cfg.trainer.epochs == 80 and cfg.dataset.batch_size == 64


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.heavy
def test_experiment_files_compose_and_merge_per_optimizer(experiment):
    table = compose_config([f"experiment={experiment}"]).get("per_optimizer") or {}
    names = {p.stem: OmegaConf.load(p).name for p in (CONFIGS / "optimizer").glob("*.yaml")}
    chosen = [stem for stem, name in names.items() if name in table] or OPTIMIZERS[:1]
    for opt in sorted(chosen):
        overrides = [f"experiment={experiment}", f"optimizer={opt}"]
        cfg = apply_per_optimizer(compose_config(overrides), overrides)
        assert cfg.experiment_name != "default"
        entry = (cfg.get("per_optimizer") or {}).get(cfg.optimizer.name)
        for key, value in ((entry or {}).get("optimizer") or {}).items():
            assert cfg.optimizer[key] == value
        optimizer_hparams(cfg.optimizer)


def test_per_optimizer_merges_but_the_command_line_wins():
    cfg = compose_config(["optimizer=adamx"])
    OmegaConf.set_struct(cfg, False)
    cfg.per_optimizer = {
        "adamx": {"optimizer": {"lr": 0.01, "weight_decay": 0.05}, "schedule": {"min_lr": 1e-4}},
        "sgd": {"optimizer": {"lr": 0.1}},
    }
    merged = apply_per_optimizer(cfg, ["optimizer=adamx", "optimizer.weight_decay=0.2"])
    assert merged.optimizer.lr == 0.01 and merged.schedule.min_lr == 1e-4
    assert merged.optimizer.weight_decay == 0.2  # the command line beats the experiment's table
    assert cfg.optimizer.lr == 1e-3  # the input config is untouched
    cfg.per_optimizer = {"adamx": {"model": {"width": 3}}}
    with pytest.raises(ValueError, match="unknown sections"):
        apply_per_optimizer(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer=adamw"], "optimizer/adamw"),
        (["model=resnet50"], "model/resnet50"),
        (["schedule=cosine"], "schedule/cosine"),
    ],
)
def test_unknown_option_lists_the_available_ones(overrides, message):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as info:
        compose_config(overrides)
    text = str(info.value)
    assert message in text and "Available options" in text
    group = message.split("/")[0]
    for option in (p.stem for p in (CONFIGS / group).glob("*.yaml")):
        assert option in text


def test_run_dir_is_deterministic_and_matches_hydras():
    cfg = compose_config(["optimizer=adam_adax", "seed=3", "runs_root=/tmp/r"], hydra=True)
    assert run_dir(cfg) == Path("/tmp/r/default/digits_cnn/adam_adax/seed3")
    assert cfg.hydra.run.dir == str(run_dir(cfg))
    assert f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" == str(run_dir(cfg))
    assert cfg.hydra.output_subdir is None and cfg.hydra.job.chdir is False


# ---------------------------------------------------------------- from test_protocol.py: The authors' single-seed protocol is one override away: ``+protocol=authors`` (c


def test_authors_protocol_sets_seed_42_and_deterministic() -> None:
    default = compose_config(["experiment=table3", "optimizer=adamx"])
    assert (default.seed, default.trainer.deterministic) == (0, False)  # our sweeps: seeds 0-4, fast kernels
    authors = compose_config(["experiment=table3", "optimizer=adamx", "+protocol=authors"])
    assert (authors.seed, authors.trainer.deterministic) == (42, True)
    # nothing else moves: the table's settings are the same under both protocols
    for key in ("model", "dataset", "optimizer", "schedule", "experiment_name"):
        assert authors[key] == default[key], key
    assert authors.trainer.epochs == default.trainer.epochs
    assert compose_config(["+protocol=authors", "seed=3"]).seed == 3  # the command line still wins
