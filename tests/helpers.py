"""Small pieces several test modules share: composing the Hydra config, pinning torch's thread count, a tiny
in-process Trainer, and the one way tests start the harness in a subprocess (run_py, start_py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]  # the checkout
CONFIGS = ROOT / "configs"


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


def tiny_trainer(
    run_dir: Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    samples: int = 8,
    batch_size: int = 4,
    lr_factor=lambda step: 1.0,
    **trainer_kwargs,
):
    """A Trainer on random classification data, in-process and on the CPU: ``model`` (default Linear(4, 3))
    fixes the input width and the class count; ``optimizer`` defaults to SGD(lr=0.1)."""
    from experiments.tasks import build_task
    from experiments.train.loaders import train_loader
    from experiments.train.trainer import Trainer, TrainerConfig

    model = model if model is not None else torch.nn.Linear(4, 3)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs, classes = linears[0].in_features, linears[-1].out_features
    data = torch.utils.data.TensorDataset(torch.randn(samples, inputs), torch.randint(0, classes, (samples,)))
    task = build_task("classification", num_classes=classes)
    return Trainer(
        task=task,
        model=model,
        optimizer=optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.1),
        train_data=train_loader(data, task.collate, batch_size, seed=0),
        eval_data=[],
        lr_factor=lr_factor,
        run_dir=run_dir,
        config=TrainerConfig(device="cpu"),
        **trainer_kwargs,
    )


def cifar_fixture_overrides(root: Path) -> list[str]:
    """run.py overrides that train the demo CNN on a CIFAR-100 fixture written at ``root``, one worker."""
    return [
        "dataset=cifar100",
        f"dataset.root={root}",
        "model=digits_cnn",
        "+model.in_channels=3",
        "dataset.batch_size=16",
        "dataset.num_workers=0",
    ]


def harness_env(**extra: str) -> dict[str, str]:
    """The environment of a harness subprocess: the checkout importable, one OpenMP thread, and none of the
    caller's ADAMX_RUNS or HYDRA_FULL_ERROR (which would move run directories or change error output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    env.pop("ADAMX_RUNS", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_py(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python run.py *args`` from the checkout, as a user types it; output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env if env is not None else harness_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_py(*argv: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """``python *argv`` started in the background from the checkout (``run.py ...``, ``-m torch.distributed.run
    ...``, a test file run as a script); text pipes unless ``popen`` says otherwise."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=env if env is not None else harness_env(), **popen
    )
