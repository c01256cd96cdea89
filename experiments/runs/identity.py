"""A run's identity: every resolved setting that can change its numbers, plus the world size and device type.

A run directory may only be resumed, or reported as done, by a command with the same identity
(experiments/runs/launch.py refuses any other with the differing keys). The identity is the whole resolved
config minus ``IGNORED``, the keys that provably cannot change what is computed; it is stored in last.pt
as well, so a directory whose config.yaml was deleted is still checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys (and whole sections) left out of the identity, each with why it cannot change the numbers.
IGNORED = {
    "trainer.progress": "a console progress bar",
    "trainer.log_every": "only how often losses reach the host; train.csv keeps every step either way",
    "trainer.checkpoint_every_min": "only how often last.pt is written; resume is exact at any step",
    "trainer.tensorboard": "a second copy of the logs",
    "trainer.jobs_per_gpu": "how many runs share a GPU in a parallel sweep (which GPU, not what is computed)",
    "dataset.root": "where the same files are read from",
    "dataset.download": "whether missing files are fetched first",
    "dataset.pin_memory": "only host memory placement before the copy to the GPU",
    "runs_root": "where the run directory is (part of its path)",
    "experiment_name": "the directory name",
    "force": "what to do with an existing run, not what to compute",
    "debug": "whether errors show a traceback",
    "per_optimizer": "merged into optimizer/schedule/trainer/dataset first; those keys are compared",
    "hydra": "Hydra's own settings",
}
WORLD_SIZE = "world_size"
DEVICE = "trainer.device"


def _flatten(container: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(container, Mapping):
        out: dict[str, Any] = {}
        for key, value in container.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: container}


def _ignored(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in IGNORED)


def run_identity(cfg: DictConfig | Mapping, world_size: int | None, device: str | None) -> dict[str, Any]:
    """``cfg`` resolved and flattened to ``{"section.key": value}`` without the ignored keys, with
    ``trainer.device`` as the device type the run uses (``auto`` resolved: cpu or cuda) and ``world_size``
    (the number of DDP processes). A None ``world_size``/``device`` (unknown, for an old run) is left out."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    identity = {key: value for key, value in _flatten(cfg).items() if not _ignored(key)}
    identity.pop(DEVICE, None)
    if device is not None:
        identity[DEVICE] = device
    if world_size is not None:
        identity[WORLD_SIZE] = int(world_size)
    return identity


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each key whose value differs, sorted. A key one side lacks counts as null
    (a setting added to the configs with a null default does not invalidate older runs); a device or
    world size unknown on either side is not compared."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in (WORLD_SIZE, DEVICE) and (key not in old or key not in new):
            continue
        if _ignored(key):  # an identity stored by a version that ignored fewer keys
            continue
        before, after = old.get(key), new.get(key)
        if before != after or isinstance(before, bool) != isinstance(after, bool):
            out.append(f"{key}: {before!r} -> {after!r}")
    return out
