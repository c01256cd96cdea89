"""Images/s of the Trainer against a minimal hand-written loop on the same model, data and batch.

    python tools/bench/bench_train.py --model digits_cnn --batch-size 32 --steps 300
    python tools/bench/bench_train.py --model convnext_b --device cuda --batch-size 128 --steps 200 \
        trainer.precision=bf16 trainer.channels_last=true trainer.compile=true

The minimal loop is the way the authors' scripts train: DataLoader, forward, loss, backward, step, with
the same ``trainer.*`` settings as the Trainer (autocast dtype and fp16 GradScaler from
``trainer.precision``, ``channels_last`` for model and images, ``torch.compile``, ``deterministic``,
``tf32`` when the config has it). The Trainer runs ``fit()`` for one epoch of exactly ``--steps`` steps
with its per-step LR, CSV logging and a progress bar on; its images/s is the summary's training
throughput (the train loop alone, not the one-batch evaluation or the checkpoint). The two alternate
``--repeats`` times (fresh model and optimizer each) and the medians are compared. A model whose data
set is absent trains on the tiny real-format copy ``data/fixtures.py`` writes (said in the output),
repeated to fill the steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import experiments.runs.rundir  # noqa: F401  (path_safe resolver)

ROOT = Path(__file__).resolve().parents[2]


class Repeat(Dataset):
    """``length`` items cycling through ``base`` (so small data sets fill the requested steps)."""

    def __init__(self, base: Dataset, length: int) -> None:
        self.base, self.length = base, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def compose_cfg(model: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[f"model={model}", *overrides])


def load_data(cfg, workdir: Path):
    """The configured data set, or its fixture copy when the real one is absent."""
    from data import DatasetNotFoundError, build_datasets
    from experiments.runs.build import dataset_kwargs

    kwargs = dataset_kwargs(cfg.dataset)
    try:
        return build_datasets(cfg.dataset.name, **kwargs), "real data"
    except DatasetNotFoundError as error:
        from data.fixtures import write_fixture

        root = write_fixture(cfg.dataset.name, workdir / "fixture")
        kwargs["root"] = str(root)
        note = f"{cfg.dataset.name} is absent ({str(error).splitlines()[0][:120]}...); using its data/fixtures.py copy"
        return build_datasets(cfg.dataset.name, **kwargs), note


def fresh(cfg, num_classes: int, device: torch.device):
    from experiments.runs.build import build_optimizer, model_kwargs
    from models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model.name, num_classes=num_classes, **model_kwargs(cfg.model)).to(device)
    return model, build_optimizer(model, cfg.optimizer)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def apply_backend_flags(cfg) -> None:
    """``trainer.deterministic`` and (when the config has it) ``trainer.tf32``, for both contenders."""
    from experiments.train.seeding import seed_everything

    seed_everything(0, bool(cfg.trainer.get("deterministic", False)))
    tf32 = cfg.trainer.get("tf32")
    if tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)


def minimal_loop(cfg, task, dataset, num_classes, batch_size, device, num_workers) -> float:
    """DataLoader, forward, loss, backward, step under the config's autocast / channels_last / compile.
    Returns images/s."""
    model, optimizer = fresh(cfg, num_classes, device)
    model.train()
    channels_last = bool(cfg.trainer.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward_model = torch.compile(model) if cfg.trainer.compile else model
    dtype = PRECISIONS[str(cfg.trainer.precision)]
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=task.collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    classification = task.name == "classification"
    images = 0
    start = time.perf_counter()
    for batch in loader:
        batch = task.to_device(batch, device, channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if classification:
                loss = F.cross_entropy(forward_model(batch[0]), batch[1])
            else:
                loss = task.loss(forward_model, batch)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        images += task.batch_size(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def trainer_config(cfg, device: torch.device):
    """The run's ``trainer`` section as a TrainerConfig, for one epoch with the progress bar on."""
    from omegaconf import OmegaConf

    from experiments.train.trainer import TrainerConfig

    fields = OmegaConf.to_container(cfg.trainer, resolve=True)
    known = {k: v for k, v in fields.items() if k in TrainerConfig.__dataclass_fields__}
    known.update(epochs=1, device=device.type, progress=True, eval_every=1)
    return TrainerConfig(**known)


def trainer_epoch(cfg, task, dataset, num_classes, batch_size, device, num_workers, workdir: Path) -> float:
    """One Trainer epoch through ``fit()`` (per-step LR, train.csv rows, progress bar). Returns images/s."""
    from experiments.train.collectives import DistInfo
    from experiments.train.loaders import train_loader
    from experiments.train.schedule import build_lr_factor
    from experiments.train.trainer import Trainer

    model, optimizer = fresh(cfg, num_classes, device)
    loader = train_loader(
        dataset,
        task.collate,
        batch_size,
        seed=0,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    lr_factor = build_lr_factor("linear_to_min", peak=float(cfg.optimizer.lr), total_steps=len(loader))
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    eval_batch = [task.collate([dataset[i] for i in range(batch_size)])]  # one batch: fit() evaluates once
    trainer = Trainer(
        task=task,
        model=model,
        optimizer=optimizer,
        train_data=loader,
        eval_data=eval_batch,
        lr_factor=lr_factor,
        run_dir=run_dir,
        config=trainer_config(cfg, device),
        dist=DistInfo(device=device),
    )
    summary = trainer.fit()
    rows = sum(1 for _ in open(run_dir / "train.csv")) - 1
    assert rows == len(loader), f"train.csv has {rows} rows for {len(loader)} steps"
    return float(summary["throughput_samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the data set config's")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. optimizer=adam")
    args = parser.parse_args()

    from experiments.runs.devices import resolve_device
    from experiments.tasks import build_task

    device = resolve_device(args.device)
    cfg = compose_cfg(args.model, [f"dataset.batch_size={args.batch_size}", *args.overrides])
    apply_backend_flags(cfg)
    workers = cfg.dataset.num_workers if args.num_workers is None else args.num_workers
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, note = load_data(cfg, workdir)
        task = build_task(
            cfg.task.name,
            num_classes=bundle.num_classes,
            **{k: v for k, v in cfg.task.items() if k != "name"},
        )
        dataset = Repeat(bundle.train, args.steps * args.batch_size)
        print(
            f"model {args.model}, optimizer {cfg.optimizer.name}, batch {args.batch_size}, {args.steps} steps, "
            f"{args.repeats} repeats, device {device}, workers {workers}; data: {note}"
        )
        t = cfg.trainer
        print(
            f"precision {t.precision}, channels_last {t.channels_last}, compile {t.compile}, "
            f"deterministic {t.deterministic}, tf32 {t.get('tf32', 'n/a')} (both loops)"
        )
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
            f"{platform.processor() or platform.machine()}"
        )
        rates: dict[str, list[float]] = {"minimal": [], "trainer": []}
        measure = {
            "minimal": lambda: minimal_loop(
                cfg, task, dataset, bundle.num_classes, args.batch_size, device, workers
            ),
            "trainer": lambda: trainer_epoch(
                cfg, task, dataset, bundle.num_classes, args.batch_size, device, workers, workdir
            ),
        }
        for r in range(args.repeats):
            for name in (
                ("minimal", "trainer") if r % 2 == 0 else ("trainer", "minimal")
            ):  # alternate who goes first
                rates[name].append(measure[name]())
            print(
                f"repeat {r + 1}: minimal {rates['minimal'][-1]:.1f} img/s, trainer {rates['trainer'][-1]:.1f} img/s",
                flush=True,
            )
    minimal, trainer = statistics.median(rates["minimal"]), statistics.median(rates["trainer"])
    print(f"minimal loop: {minimal:.1f} images/s (median)")
    print(f"trainer:      {trainer:.1f} images/s (median)")
    print(f"ratio trainer/minimal: {trainer / minimal:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
