"""What a run writes about itself besides checkpoints: train.csv (one row per step), eval.csv (one row per
evaluation), TensorBoard event files when asked, and summary.json (status, best and final metrics, counters,
throughput, memory, device, versions). Rank 0 writes; the CSVs stay the record."""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from experiments.train.checkpoint import drop_torn_line, row_step
from experiments.train.files import CsvLog, write_json
from experiments.train.task import Task
from experiments.train.telemetry import OPTIM_COLUMNS
from experiments.train.tensorboard_log import TensorBoardLog

FULL_LOSS_COLUMNS = ["step", "epoch", "full_loss", "samples", "at"]

if TYPE_CHECKING:
    from experiments.train.trainer import Trainer


class Records:
    """The run directory's logs. Only the main process writes; on other ranks every call is a no-op."""

    def __init__(self, run_dir: Path, main: bool, tensorboard: bool) -> None:
        self.main = main
        self.train_log = CsvLog(run_dir / "train.csv", ["step", "epoch", "loss", "lr", "time"])
        self.eval_log = CsvLog(run_dir / "eval.csv", ["epoch", "step"])
        self.optim_log = CsvLog(run_dir / "optim.csv", OPTIM_COLUMNS)  # written only when asked for
        self.full_loss_log = CsvLog(run_dir / "full_loss.csv", FULL_LOSS_COLUMNS)
        self.tb = TensorBoardLog(run_dir, enabled=tensorboard and main)

    def train_rows(self, rows: list[tuple[int, int, float, float, float]]) -> None:
        """Append (step, epoch, loss, lr, time) rows; floats are written with repr (exact round trip)."""
        if not self.main:
            return
        for step, _, loss, lr, _ in rows:
            self.tb.train(step, loss, lr)
        self.train_log.write(
            [
                {"step": step, "epoch": epoch, "loss": repr(loss), "lr": repr(lr), "time": f"{t:.3f}"}
                for step, epoch, loss, lr, t in rows
            ]
        )

    def eval_row(self, epoch: int, step: int, metrics: dict[str, float], elapsed: float) -> None:
        if self.main:
            self.eval_log.write([{"epoch": epoch, "step": step, **metrics, "time": f"{elapsed:.3f}"}])
            self.tb.eval(step, metrics)

    def optim_rows(self, rows: list[dict]) -> None:
        """optim.csv rows (experiments/train/telemetry.py); TensorBoard gets optim/group<g>/<column>."""
        if self.main:
            self.optim_log.write(rows)
            for row in rows:
                numbers = {
                    k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "group")
                }
                self.tb.scalars(f"optim/group{row['group']}", row["step"], numbers)

    def full_loss_row(self, step: int, epoch: int, loss: float, samples: int, at: str) -> None:
        if self.main:
            row = {"step": step, "epoch": epoch, "full_loss": repr(loss), "samples": samples, "at": at}
            self.full_loss_log.write([row])

    def keep_until(self, step: float) -> None:
        """Make the logs end at ``step`` (last.pt's): torn last lines and rows written after it go."""
        if not self.main:
            return
        for log in self.logs:
            log.close()
            drop_torn_line(log.path)
            log.truncate(lambda row: row_step(row) <= step)

    @property
    def logs(self) -> tuple[CsvLog, ...]:
        return (self.train_log, self.eval_log, self.optim_log, self.full_loss_log)

    def close(self) -> None:
        for log in self.logs:
            log.close()
        self.tb.close()


def update_best(best: dict[str, dict], metrics: dict[str, float], task: Task, epoch: int, step: int) -> bool:
    """Record in ``best`` each metric that improved (in its own direction; NaN never does); return whether
    the task's primary metric did."""
    directions = getattr(task, "metric_directions", {}) or {}
    improved = False
    for name, value in metrics.items():
        higher = directions.get(name, task.higher_is_better)
        old = best.get(name)
        better = old is None or (value > old["value"] if higher else value < old["value"])
        if better and math.isfinite(value):
            best[name] = {"value": value, "epoch": epoch, "step": step}
            improved |= name == task.primary_metric
    return improved


def progress_bar(iterable: Iterable, total: int | None, desc: str, enabled: Any, main: bool) -> Any:
    """A tqdm bar on stderr for rank 0 when ``enabled`` (``auto``: stderr is a terminal), else None."""
    if enabled == "auto":
        enabled = sys.stderr.isatty()
    if not (enabled and main):
        return None
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def summary(trainer: Trainer, status: str, reason: str | None) -> dict[str, Any]:
    """summary.json's content: where the run stands and what it ran on."""
    device = trainer.device
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train_time = trainer._train_time()
    return {
        "status": status,
        "reason": reason,
        **trainer.info,
        "primary_metric": trainer.task.primary_metric,
        "higher_is_better": trainer.task.higher_is_better,
        "epochs": trainer.cfg.epochs,
        "epochs_done": trainer.epoch,
        "steps": trainer.step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "best": trainer.best,
        "final": trainer.final,
        "wall_time_s": round(trainer.elapsed(), 3),
        "train_time_s": round(train_time, 3),
        "throughput_samples_per_s": round(trainer.samples / train_time, 2) if train_time else None,
        "peak_memory_bytes": int(peak),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "world_size": trainer.dist.world_size,
        "precision": trainer.cfg.precision,
        "tf32": trainer.cfg.tf32,
        **({"hessian_refreshes_skipped": trainer.hessian_skipped} if trainer.hessian_interval else {}),
        **trainer.environment,
        "started": trainer.started,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_summary(trainer: Trainer, status: str, reason: str | None = None) -> dict[str, Any]:
    """Write summary.json atomically (rank 0) and return it (empty on the other ranks)."""
    if not trainer.main:
        return {}
    content = summary(trainer, status, reason)
    write_json(content, trainer.run_dir / "summary.json")
    return content
