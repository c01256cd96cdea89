"""From a composed config to a finished run directory: decide resume/skip/restart, build the task,
data, model, optimizer and schedule, and hand them to the Trainer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from experiments import distributed
from experiments.build import (
    apply_per_optimizer,
    build_optimizer,
    dataset_kwargs,
    hessian_update_interval,
    model_kwargs,
    task_kwargs,
)
from experiments.loaders import DeviceEpochLoader, eval_loader, train_loader
from experiments.rundir import read_json, run_dir, write_config
from experiments.schedule import build_lr_factor
from experiments.seeding import seed_everything
from experiments.trainer import Hooks, Trainer, TrainerConfig

RUN_FILES = ("config.yaml", "train.csv", "eval.csv", "summary.json", "last.pt", "best.pt")
# What must not change between the session that started a run and one that resumes it.
IDENTITY_KEYS = (
    "seed",
    "optimizer",
    "model",
    "task",
    "schedule",
    "trainer.epochs",
    "dataset.name",
    "dataset.batch_size",
    "dataset.drop_last",
)


def _select(container: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(container, dict) or part not in container:
            return None
        container = container[part]
    return container


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}")
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def config_differences(old_cfg: dict, new_cfg: dict) -> list[str]:
    """The identity keys on which two resolved configs differ, as ``key: old -> new`` lines."""
    out = []
    for key in IDENTITY_KEYS:
        out += _differences(_select(old_cfg, key), _select(new_cfg, key), key)
    return out


def prepare_run_dir(cfg: DictConfig, path: Path) -> dict | None:
    """Restart (force), skip (finished or failed: return its summary) or resume/start (return None)."""
    if cfg.get("force", False):
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        return None
    saved = path / "config.yaml"
    if saved.exists():
        old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        diff = config_differences(old, OmegaConf.to_container(cfg, resolve=True))
        if diff:
            raise ValueError(
                f"{path} holds a run made with a different config ({'; '.join(diff)}); pass force=true to "
                "replace it, or give this run its own experiment_name (e.g. experiment_name=lr_${optimizer.lr})."
            )
    summary = read_json(path / "summary.json")
    if summary and summary.get("status") in ("finished", "failed"):
        return summary
    return None


def run_experiment(
    cfg: DictConfig, overrides: Sequence[str] = (), hooks: Hooks | None = None
) -> dict[str, Any]:
    """Train the run ``cfg`` describes (resuming or skipping as its directory says); return its summary."""
    from data import build_datasets
    from experiments.tasks import build_task
    from models import build_model

    cfg = apply_per_optimizer(cfg, overrides)
    tcfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    dist = distributed.setup(tcfg.device)
    try:
        path = run_dir(cfg)
        skipped = prepare_run_dir(cfg, path) if dist.is_main else None
        skipped = distributed.broadcast_object(skipped)
        if skipped is not None:
            return {**skipped, "skipped": True} if dist.is_main else {}

        seed_everything(int(cfg.seed), tcfg.deterministic)
        bundle = build_datasets(cfg.dataset.name, **dataset_kwargs(cfg.dataset))
        task = build_task(cfg.task.name, num_classes=bundle.num_classes, **task_kwargs(cfg.task))
        seed_everything(int(cfg.seed), tcfg.deterministic)  # model init independent of the data code
        model = build_model(cfg.model.name, num_classes=bundle.num_classes, **model_kwargs(cfg.model))
        model.to(dist.device)
        optimizer = build_optimizer(model, cfg.optimizer)

        data = cfg.dataset
        pin = dist.device.type == "cuda" and data.get("pin_memory", True)
        device_loader = getattr(bundle, "device_loader", None)
        if data.get("device_resident", False):
            if device_loader is None:
                raise ValueError(
                    f"dataset.device_resident=true but dataset {data.name!r} offers no device-resident loader; "
                    "set dataset.device_resident=false."
                )
            shard = {"num_replicas": dist.world_size, "rank": dist.rank} if dist.enabled else {}
            train = DeviceEpochLoader(
                device_loader,
                data.batch_size,
                data.drop_last,
                dist.device,
                int(cfg.seed),
                dist.rank,
                dist.world_size,
            )
            evals = device_loader(
                "eval", data.eval_batch_size, False, False, dist.device, torch.Generator(dist.device), **shard
            )
        else:
            train = train_loader(
                bundle.train,
                task.collate,
                data.batch_size,
                int(cfg.seed),
                data.num_workers,
                data.drop_last,
                dist.rank,
                dist.world_size,
                pin,
            )
            evals = eval_loader(
                bundle.eval,
                task.collate,
                data.eval_batch_size,
                data.num_workers,
                dist.rank,
                dist.world_size,
                pin,
            )
        if len(train) == 0:
            raise ValueError(
                f"The training set ({len(bundle.train)} samples) gives no full batch of dataset.batch_size="
                f"{data.batch_size}; lower the batch size or set dataset.drop_last=false."
            )

        sched = OmegaConf.to_container(cfg.schedule, resolve=True)
        lr_factor = build_lr_factor(
            sched.pop("name"), peak=float(cfg.optimizer.lr), total_steps=len(train) * tcfg.epochs, **sched
        )
        if dist.is_main:
            path.mkdir(parents=True, exist_ok=True)
            write_config(cfg, path / "config.yaml")
        info = {
            "run_dir": str(path),
            "experiment": cfg.experiment_name,
            "model": cfg.model.name,
            "optimizer": cfg.optimizer.name,
            "dataset": cfg.dataset.name,
            "task": cfg.task.name,
            "seed": int(cfg.seed),
        }
        trainer = Trainer(
            task=task,
            model=model,
            optimizer=optimizer,
            train_data=train,
            eval_data=evals,
            lr_factor=lr_factor,
            run_dir=path,
            config=tcfg,
            dist=dist,
            hessian_interval=hessian_update_interval(cfg.optimizer),
            batch_factor=hessian_update_interval(cfg.optimizer) is not None
            and cfg.optimizer.get("bs") is None,
            hooks=hooks,
            info=info,
        )
        return trainer.fit()
    finally:
        distributed.teardown()
