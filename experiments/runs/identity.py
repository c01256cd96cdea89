"""A run's identity: every resolved setting that can change its numbers, plus the world size and device type.

A run directory may only be resumed, or reported as done, by a command with the same identity
(experiments/runs/launch.py refuses any other with the differing keys). The identity is the whole resolved
config minus ``IGNORED``, the keys that provably cannot change what is computed; it is stored in last.pt
as well, so a directory whose config.yaml was deleted is still checked.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.train.errors import UsageError, one_line
from experiments.train.seeding import rng_state, set_rng_state

# Keys (and whole sections) left out of the identity, each with why it cannot change the numbers.
IGNORED = {
    "trainer.progress": "a console progress bar",
    "trainer.log_every": "only how often losses reach the host; train.csv keeps every step either way",
    "trainer.checkpoint_every_min": "only how often last.pt is written; resume is exact at any step",
    "trainer.tensorboard": "a second copy of the logs",
    "trainer.jobs_per_gpu": "how many runs share a GPU in a parallel sweep (which GPU, not what is computed)",
    "trainer.dist_timeout_min": "how long a collective may wait before the job fails (a failure, never a number)",
    "trainer.optim_stats_every": "optim.csv only: telemetry reads the optimizer's state, draws no random number",
    "trainer.optim_stats_eps": "a threshold of optim.csv's frac_step_below_eps column only",
    "trainer.full_loss_steps": "full_loss.csv only: a float64 copy of the model in eval mode, RNG forked",
    "trainer.full_loss_at_eval": "full_loss.csv only: a float64 copy of the model in eval mode, RNG forked",
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
# What identifies the files behind dataset.root (data_identity): a run is refused on other data even
# though dataset.root itself is ignored. Not compared when either side lacks them (a run made before
# they were recorded; the pre-check before the data is built).
DATA_KEYS = ("data.train_samples", "data.eval_samples", "data.eval_fingerprint")
# Keys added to the configs after run directories already existed: what an identity without the key (a
# run made before it) meant, as a function of that identity. None where no value of the key reproduces
# it, so such a run is refused with that key named.
ADDED_LATER: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    # Before trainer.tf32, torch's defaults applied: TF32 off for matmuls, on for cuDNN convolutions. On
    # a CPU there is no TF32, so that is tf32=false; on a GPU neither true nor false reproduces it.
    "trainer.tf32": lambda old: False if old.get(DEVICE) == "cpu" else None,
}


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
    (a setting added to the configs with a null default does not invalidate older runs), except the keys
    in ``ADDED_LATER``, which take their old meaning; a device, world size or data record unknown on
    either side is not compared."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in (WORLD_SIZE, DEVICE, *DATA_KEYS) and (key not in old or key not in new):
            continue
        if _ignored(key):  # an identity stored by a version that ignored fewer keys
            continue
        before, after = _value(old, key), _value(new, key)
        if before != after or isinstance(before, bool) != isinstance(after, bool):
            out.append(f"{key}: {before!r} -> {after!r}")
    return out


def _value(identity: Mapping[str, Any], key: str) -> Any:
    if key not in identity and key in ADDED_LATER:
        return ADDED_LATER[key](identity)
    return identity.get(key)


def _feed(digest: Any, value: Any) -> None:
    """Hash a data set sample: tensors and arrays by their bytes, containers item by item."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.contiguous().numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        digest.update(repr(value).encode())
    elif hasattr(value, "tobytes"):  # a PIL image
        digest.update(f"{getattr(value, 'mode', '')}{getattr(value, 'size', '')}".encode())
        digest.update(value.tobytes())
    else:
        digest.update(type(value).__name__.encode())


def data_identity(bundle: Any, where: str) -> dict[str, Any]:
    """What identifies the data behind ``dataset.root`` at little cost: the two splits' sizes and a hash of
    three evaluation samples (first, middle, last). Reading them also proves the files are readable before
    anything is written (a data set without its annotations is one sentence, not a failed run). Global RNG
    states are left as they were (a random eval transform draws from a fixed seed here)."""
    train, evals = len(bundle.train), len(bundle.eval)
    digest = hashlib.sha256()
    saved = rng_state()
    try:
        random.seed(0)
        torch.manual_seed(0)
        np.random.seed(0)
        for index in sorted({0, evals // 2, evals - 1} if evals else set()):
            try:
                sample = bundle.eval[index]
            except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as error:
                raise UsageError(
                    f"{where}: reading evaluation sample {index} failed ({one_line(error)[:300]}); check the "
                    "data set's files (make check-data) or point dataset.root at a complete copy."
                ) from error
            _feed(digest, sample)
    finally:
        set_rng_state(saved)
    return {DATA_KEYS[0]: train, DATA_KEYS[1]: evals, DATA_KEYS[2]: digest.hexdigest()[:16]}
