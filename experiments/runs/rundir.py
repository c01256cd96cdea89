"""The run-directory rule: ``<runs_root>/<experiment_name>/<model.name>/<optimizer.name with + as _>/seed<seed>/``
(the same rule ``configs/config.yaml`` gives Hydra through the ``path_safe`` resolver), the resolved
config written there, and the clean-up of Hydra's folders left by a refused command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.train.files import atomic_write


def path_safe(name: str) -> str:
    """A config name as a directory name (``adam+adax`` -> ``adam_adax``)."""
    return str(name).replace("+", "_").replace("/", "_").replace(" ", "_")


if not OmegaConf.has_resolver("path_safe"):
    OmegaConf.register_new_resolver("path_safe", path_safe)


def run_dir(cfg: DictConfig) -> Path:
    """The run directory a config trains into (the same rule ``configs/config.yaml`` gives Hydra)."""
    return (
        Path(str(cfg.runs_root))
        / path_safe(cfg.experiment_name)
        / path_safe(cfg.model.name)
        / path_safe(cfg.optimizer.name)
        / f"seed{cfg.seed}"
    )


def write_config(cfg: DictConfig, path: Path) -> None:
    atomic_write(path, lambda handle: handle.write(OmegaConf.to_yaml(cfg, resolve=True)))


def remove_if_only(directory: Path, names: Sequence[str], stop: Path) -> None:
    """Delete ``directory`` when it holds nothing but files called ``names`` (Hydra's log of a command
    that was refused), then its parents while they are empty, up to but not including ``stop``."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    if any(entry.name not in names or not entry.is_file() for entry in entries):
        return
    for entry in entries:
        entry.unlink(missing_ok=True)
    stop = stop.resolve()
    for folder in (directory, *directory.parents):
        if folder.resolve() == stop or stop not in folder.resolve().parents:
            break
        try:
            folder.rmdir()
        except OSError:
            break
