"""The trainer's checkpoints: what last.pt holds and how a resume restores it, best.pt kept consistent with
last.pt, and the repair of logs a kill left torn.

last.pt is the commit point of a run. Everything here is called by ``Trainer`` in the order its
docstring states; nothing here decides when.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from experiments.train import collectives
from experiments.train.files import save_checkpoint
from experiments.train.seeding import rng_state, set_rng_state

if TYPE_CHECKING:
    from experiments.train.trainer import Trainer

COUNTERS = ("epoch", "step", "samples", "best", "final")  # what summary.json reports after a stop or failure


def training_state(trainer: Trainer) -> dict[str, Any]:
    """Everything a resume needs, at a step boundary (an epoch end or mid-epoch). Every rank must call it:
    the ranks' RNG states are gathered."""
    own_rng = {**rng_state(), "loader_generator": trainer.train_data.generator.get_state()}
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else {},
        "epoch": trainer.epoch,
        "step": trainer.step,
        "batch_in_epoch": trainer.step - trainer.epoch * trainer.steps_per_epoch,
        "steps_per_epoch": trainer.steps_per_epoch,
        "best": trainer.best,
        "final": trainer.final,
        "elapsed": trainer.elapsed(),
        "train_time": trainer._train_time(),
        "samples": trainer.samples,
        "hessian_skipped": trainer.hessian_skipped,
        "started": trainer.started,
        "identity": trainer.identity,
        "rng": collectives.all_gather_object(own_rng),
    }


def restore(trainer: Trainer, state: dict[str, Any]) -> None:
    """Put ``trainer`` where ``state`` (a ``training_state``) was taken; this rank's RNG streams included."""
    saved_steps = int(state.get("steps_per_epoch", trainer.steps_per_epoch))
    if saved_steps != trainer.steps_per_epoch:  # a batch_in_epoch would point at other samples
        raise ValueError(
            f"{trainer.run_dir / 'last.pt'} was written with {saved_steps} steps per epoch and this run has "
            f"{trainer.steps_per_epoch} (another batch size, data set size or number of processes); resume "
            "it as it was started, or pass force=true to start over."
        )
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])  # places state like torch does (step on CPU)
    if trainer.scaler is not None and state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.best, trainer.final = dict(state["best"]), dict(state["final"])
    trainer.elapsed_before, trainer.train_time = float(state["elapsed"]), float(state["train_time"])
    trainer.samples, trainer.started = int(state["samples"]), state["started"]
    trainer.hessian_skipped = int(state.get("hessian_skipped", 0))
    rngs = state["rng"]
    own = rngs[trainer.dist.rank] if len(rngs) == trainer.dist.world_size else rngs[0]
    set_rng_state(own)
    mid_epoch = trainer.step - trainer.epoch * trainer.steps_per_epoch > 0
    trainer._loader_state = own.get("loader_generator") if mid_epoch else None
    trainer._session_start = time.perf_counter()


def load_last(run_dir: Path) -> dict[str, Any] | None:
    """last.pt, loaded on the CPU (``restore`` then places each tensor: an optimizer's step counters stay on
    the CPU as torch keeps them; map_location=cuda would make RAdam sync once per parameter), or None."""
    path = run_dir / "last.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def best_state(trainer: Trainer, metrics: dict[str, float]) -> dict[str, Any]:
    """What best.pt holds: the weights of the evaluation that improved the primary metric."""
    return {
        "model": trainer.model.state_dict(),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "metrics": metrics,
    }


def reconcile_best(trainer: Trainer) -> str | None:
    """Make best.pt the checkpoint last.pt's best record names (rank 0). A stop after last.pt's rename and
    before best.pt's leaves the old one: its weights are last.pt's own, so it is rebuilt from them. Returns
    what was done, for the log, or None."""
    path = trainer.run_dir / "best.pt"
    record = trainer.best.get(trainer.task.primary_metric)
    on_disk = None
    if path.exists():
        try:
            on_disk = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
        except Exception:  # a torn or foreign file: treated as absent
            on_disk = None
    if record is not None and on_disk == int(record["step"]):
        return None
    if (
        record is not None
        and int(record["step"]) == trainer.step
        and trainer.final.get("step") == trainer.step
    ):
        save_checkpoint(best_state(trainer, trainer.final["metrics"]), path)
        return f"rebuilt best.pt from last.pt (step {trainer.step})"
    if path.exists():
        path.unlink()
        return f"removed best.pt (step {on_disk}): last.pt records no best checkpoint at that step"
    return None


def row_step(row: dict[str, str | None]) -> float:
    """A CSV row's step, or infinity for a row that is not whole (dropped by a resume's truncation)."""
    try:
        if any(value is None for value in row.values()) or None in row:
            return math.inf
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return math.inf


def drop_torn_line(path: Path) -> None:
    """Cut a final line without its newline (a kill in mid-append) so that no prefix passes for a row."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
