"""Small pieces several test modules share: composing the Hydra config, pinning torch's thread count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: Iterable[str] = (), hydra: bool = False) -> DictConfig:
    """The config ``run.py`` would see with these command-line overrides."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads: small ops on a shared 2-core box are faster on one thread
    than on two oversubscribed ones (OpenMP spinning against other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
