"""Small pieces several test modules share: composing the Hydra config, pinning torch's thread count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

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
