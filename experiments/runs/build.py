"""Composition from the config: per-optimizer settings, the optimizer, and the split of dataset keys
between the loaders and the data set's builder."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.train.errors import UsageError

LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "drop_last", "device_resident", "pin_memory")
TRAINER_ONLY_OPTIMIZER_KEYS = ("name", "hessian_update_interval")


def apply_per_optimizer(cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """Merge ``per_optimizer[<optimizer.name>]`` (an experiment's per-optimizer table) over the
    chosen optimizer and schedule, then re-apply the command line's ``optimizer.*``/``schedule.*``
    overrides so that the command line still wins."""
    table = cfg.get("per_optimizer") or {}
    entry = table.get(cfg.optimizer.name) if table else None
    if not entry:
        return cfg
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    unknown = set(entry) - {"optimizer", "schedule", "trainer", "dataset"}
    if unknown:
        raise UsageError(
            f"per_optimizer.{cfg.optimizer.name} has unknown sections {sorted(unknown)}; "
            "allowed: optimizer, schedule, trainer, dataset."
        )
    for section, values in entry.items():
        cfg[section] = OmegaConf.merge(cfg[section], values)
    for key, value in _dotted_overrides(overrides):
        if key.split(".")[0] in entry:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def _dotted_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``key.sub=value`` command-line overrides as (key, parsed value), group choices left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if "." in key and not override.is_delete() and not override.is_sweep_override():
            out.append((key, override.value()))
    return out


def dataset_kwargs(dataset_cfg: DictConfig) -> dict[str, Any]:
    """The dataset fields that go to ``build_datasets`` (everything but its name and the loader keys)."""
    fields = OmegaConf.to_container(dataset_cfg, resolve=True)
    return {k: v for k, v in fields.items() if k != "name" and k not in LOADER_KEYS}


def model_kwargs(model_cfg: DictConfig) -> dict[str, Any]:
    """The model fields that go to ``build_model`` (everything but its name)."""
    fields = OmegaConf.to_container(model_cfg, resolve=True)
    return {k: v for k, v in fields.items() if k != "name"}


def task_kwargs(task_cfg: DictConfig) -> dict[str, Any]:
    fields = OmegaConf.to_container(task_cfg, resolve=True)
    return {k: v for k, v in fields.items() if k != "name"}


def optimizer_hparams(optimizer_cfg: DictConfig) -> dict[str, Any]:
    """The optimizer's constructor keyword arguments (lists become tuples, as torch expects for betas)."""
    fields = OmegaConf.to_container(optimizer_cfg, resolve=True)
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in fields.items()
        if k not in TRAINER_ONLY_OPTIMIZER_KEYS
    }


def build_optimizer(model: nn.Module, optimizer_cfg: DictConfig):
    """``adamx.create_optimizer`` on decay groups (decay on conv/linear weights only, the authors' rule), with
    ``fused: auto`` resolved for the model's device (``resolve_fused``); ``adamx.active_path(optimizer)`` names
    the path that then runs."""
    import adamx

    hparams = optimizer_hparams(optimizer_cfg)
    weight_decay = hparams.pop("weight_decay", 0.0) or 0.0
    groups = adamx.decay_param_groups(model, weight_decay)
    hparams = resolve_fused(optimizer_cfg.name, hparams, list(model.parameters()))
    return adamx.create_optimizer(optimizer_cfg.name, groups, **hparams)


def resolve_fused(name: str, hparams: dict[str, Any], params: list) -> dict[str, Any]:
    """``fused: auto`` (the configs' default) as the path the optimizer will run on ``params``: fused=True where
    the optimizer has a fused path and the parameters' device and dtype support torch's fused kernel (CPU,
    CUDA), else foreach=True (fused=False). An explicit ``foreach`` wins; an optimizer without a fused path
    (Lion, SophiaG, RAdam) gets ``foreach`` only, and ``fused: true`` for one is refused with a sentence."""
    import inspect
    from functools import partial

    import adamx

    hparams = dict(hparams)
    fused = hparams.get("fused")
    builder = adamx.OPTIMIZERS.get(name)
    target = builder.func if isinstance(builder, partial) else builder
    accepts = set(inspect.signature(target).parameters) if target is not None else set()
    if "fused" not in accepts:
        if fused not in (None, False, "auto") and "fused" in hparams:
            raise UsageError(
                f"optimizer.fused={fused!r}, but optimizer {name!r} has no fused path; "
                "set optimizer.fused=auto or null."
            )
        hparams.pop("fused", None)
        if fused == "auto" and "foreach" in accepts and hparams.get("foreach") is None:
            hparams["foreach"] = True
        return hparams
    if fused != "auto":
        return hparams
    if hparams.get("foreach") is not None:  # an explicit foreach wins
        hparams["fused"] = False
        return hparams
    if adamx.fused_supported(params):
        hparams["fused"] = True
    else:
        hparams["fused"] = False
        hparams["foreach"] = True
    return hparams


def hessian_update_interval(optimizer_cfg: DictConfig) -> int | None:
    """SophiaG's k (refresh the Hessian EMA every k steps); None for every other optimizer."""
    k = optimizer_cfg.get("hessian_update_interval")
    if k is None:
        return None
    if int(k) < 1:
        raise ValueError(f"optimizer.hessian_update_interval must be a positive step count, got {k}.")
    return int(k)


def seed_value(cfg: DictConfig) -> int:
    """``cfg.seed`` as an int, or a UsageError naming the key (``seed=abc``)."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed={seed!r} is not an integer; pass e.g. seed=0.")
    return seed


def trainer_config(trainer_cfg: DictConfig):
    """``TrainerConfig`` from the ``trainer`` section, each key checked against the dataclass's fields and
    types first, so ``+trainer.epoch=3`` or ``trainer.epochs=abc`` gets a sentence naming the key."""
    from experiments.train.trainer import TrainerConfig

    fields = OmegaConf.to_container(trainer_cfg, resolve=True)
    hints = typing.get_type_hints(TrainerConfig)
    for key in fields:
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f" (did you mean trainer.{close[0]}?)" if close else ""
            raise UsageError(
                f"Unknown key trainer.{key}{hint}; the trainer's keys are {', '.join(hints)} "
                "(configs/trainer/default.yaml)."
            )
        fields[key] = _typed(f"trainer.{key}", fields[key], hints[key])
    try:
        return TrainerConfig(**fields)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from error


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the type hint (ints are accepted for floats), else a UsageError."""
    if typing.get_origin(hint) is list:  # list[int]: a list of whole numbers
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise UsageError(f"{key}={value!r} is not a list of integers; write e.g. {key}=[100,200].")
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = typing.get_args(hint) if union else (hint,)
    if Any in allowed or (value is None and type(None) in allowed):
        return value
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, (int, float)) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    raise UsageError(f"{key}={value!r} is not of type {names}; see configs/trainer/default.yaml.")
