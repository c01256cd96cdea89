"""One trainer for every task: steps, per-step LR, mixed precision, SophiaG's Hessian refresh, DDP,
evaluation, CSV logs, atomic checkpoints and exact resume.

The task decides what a batch means (loss, metrics); the trainer decides when things happen.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from experiments import distributed
from experiments.distributed import DistInfo
from experiments.loaders import EpochLoader
from experiments.rundir import (
    CsvLog,
    git_commit,
    load_checkpoint,
    save_checkpoint,
    versions,
    write_json,
)
from experiments.seeding import rng_state, set_rng_state
from experiments.tasks.base import EvalContext, Task

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerConfig:
    """Mirrors ``configs/trainer/default.yaml``."""

    epochs: int = 1
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    grad_clip: float | None = None
    eval_every: int = 1
    progress: Any = "auto"  # auto (a TTY on rank 0), true, false
    log_every: int = 20  # steps between host syncs of the loss (train.csv rows keep every step)
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown trainer.precision={self.precision!r}; choose one of {list(PRECISIONS)}."
            )
        if self.epochs < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ValueError(
                f"trainer.epochs, eval_every and log_every must be >= 1, got "
                f"{self.epochs}, {self.eval_every}, {self.log_every}."
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"trainer.grad_clip must be positive or null, got {self.grad_clip}.")


class TrainingFailed(RuntimeError):
    """The run stopped on a non-finite loss; the message is the one-line reason."""


@dataclass
class Hooks:
    """Test and extension points; ``on_epoch_end(trainer, epoch)`` runs after last.pt is written."""

    on_epoch_end: Callable[[Trainer, int], None] | None = None


class Trainer:
    """Trains ``model`` on ``task`` with ``optimizer``; writes everything under ``run_dir``."""

    def __init__(
        self,
        *,
        task: Task,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: EpochLoader,
        eval_data: Iterable,
        lr_factor: Callable[[int], float],
        run_dir: Path | str,
        config: TrainerConfig,
        dist: DistInfo | None = None,
        hessian_interval: int | None = None,
        batch_factor: bool = False,
        hooks: Hooks | None = None,
        info: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,  # integrity-launch: stored in last.pt
    ) -> None:
        self.task, self.model, self.optimizer = task, model, optimizer
        self.train_data, self.eval_data, self.lr_factor = train_data, eval_data, lr_factor
        self.run_dir, self.cfg = Path(run_dir), config
        self.dist = dist or DistInfo(device=next(model.parameters()).device)
        self.device = self.dist.device
        self.hessian_interval = hessian_interval
        self.batch_factor = batch_factor  # SophiaG: pass the global batch size as step(bs=...)
        self.hooks = hooks or Hooks()
        self.info = dict(info or {})
        self.identity = dict(identity or {})  # integrity-launch

        dtype = PRECISIONS[config.precision]
        self.amp_dtype = dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype is torch.float16 else None
        if hessian_interval and not hasattr(optimizer, "update_hessian"):
            raise ValueError(
                f"optimizer.hessian_update_interval={hessian_interval} is set but {type(optimizer).__name__} "
                "has no update_hessian(); remove the key or use optimizer=sophiag."
            )

        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.dist.enabled and config.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.eval_model: nn.Module = self.model
        if config.compile:
            self.train_model = torch.compile(self.train_model)
            self.eval_model = torch.compile(self.model)

        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

        self.steps_per_epoch = len(train_data)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.best: dict[str, dict[str, float]] = {}
        self.final: dict[str, Any] = {}
        self.elapsed_before = 0.0  # wall time of earlier sessions of this run
        self.train_time = 0.0
        self.samples = 0
        self._samples_at_epoch_start = 0
        self._environment = {"versions": versions(), "git_commit": git_commit()}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._session_start = time.perf_counter()
        self.summary: dict[str, Any] = {}
        self._pending: list[tuple[int, int, torch.Tensor, float, float]] = []
        self.train_log = CsvLog(self.run_dir / "train.csv", ["step", "epoch", "loss", "lr", "time"])
        self.eval_log = CsvLog(self.run_dir / "eval.csv", ["epoch", "step"])

    # ------------------------------------------------------------------ helpers

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._session_start

    def _progress(self, iterable: Iterable, total: int, desc: str):
        enabled = self.cfg.progress
        if enabled == "auto":
            enabled = sys.stderr.isatty()
        if not (enabled and self.main):
            return None
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    def _log(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "final": self.final,
            "elapsed": self.elapsed(),
            "train_time": self.train_time,
            "samples": self.samples,
            "started": self.started,
            "rng": distributed.all_gather_object(rng_state()),
            "identity": self.identity,  # integrity-launch
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best, self.final = dict(state["best"]), dict(state["final"])
        self.elapsed_before, self.train_time = float(state["elapsed"]), float(state["train_time"])
        self.samples, self.started = int(state["samples"]), state["started"]
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])
        self._session_start = time.perf_counter()

    def save(self) -> None:
        state = self.state_dict()  # every rank joins the RNG gather
        if self.main:
            save_checkpoint(state, self.run_dir / "last.pt")
        distributed.barrier()

    def resume(self) -> bool:
        """Continue from last.pt when it exists; drop log rows written after it."""
        path = self.run_dir / "last.pt"
        if not path.exists():
            if self.main:  # rows of a session that stopped before its first checkpoint
                self.train_log.truncate(lambda row: False)
                self.eval_log.truncate(lambda row: False)
            return False
        self.load_state_dict(load_checkpoint(path, self.device))
        if self.main:
            step, epoch = self.step, self.epoch
            self.train_log.truncate(lambda row: int(row["step"]) <= step)
            self.eval_log.truncate(lambda row: int(row["epoch"]) <= epoch)
        self._log(f"resuming {self.run_dir} from epoch {self.epoch}, step {self.step}")
        return True

    # ------------------------------------------------------------------ summary

    def write_summary(self, status: str, reason: str | None = None) -> None:
        """Write summary.json (rank 0; ``self.summary`` stays empty on the other ranks)."""
        if not self.main:
            return
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        summary = {
            "status": status,
            "reason": reason,
            **self.info,
            "primary_metric": self.task.primary_metric,
            "higher_is_better": self.task.higher_is_better,
            "epochs": self.cfg.epochs,
            "epochs_done": self.epoch,
            "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "best": self.best,
            "final": self.final,
            "wall_time_s": round(self.elapsed(), 3),
            "train_time_s": round(self.train_time, 3),
            "throughput_samples_per_s": round(self.samples / self.train_time, 2) if self.train_time else None,
            "peak_memory_bytes": int(peak),
            "device": str(self.device)
            + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else ""),
            "world_size": self.dist.world_size,
            "precision": self.cfg.precision,
            **self._environment,
            "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(summary, self.run_dir / "summary.json")
        self.summary = summary

    # ------------------------------------------------------------------ training

    def _set_lr(self) -> float:
        factor = self.lr_factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self, samples: int) -> None:
        if self.cfg.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        kwargs = {"bs": samples} if self.batch_factor else {}
        if self.scaler is not None:
            self.scaler.step(self.optimizer, **kwargs)
            self.scaler.update()
        else:
            self.optimizer.step(**kwargs)
        self.optimizer.zero_grad(set_to_none=True)

    def _hessian_step(self, batch: Any) -> None:
        """SophiaG: refresh the Hessian EMA from the gradient of the sampled-label loss."""
        with self.autocast():
            loss = self.task.sampled_loss(self.train_model, batch)
        if loss is None:
            raise ValueError(
                f"optimizer.hessian_update_interval is set but task {self.task.name!r} defines no "
                "sampled_loss; SophiaG needs one."
            )
        loss.backward()
        self.optimizer.update_hessian()
        self.optimizer.zero_grad(set_to_none=True)

    def _flush(self, bar: Any = None) -> None:
        """Move pending losses to the host in one sync, check them, and append them to train.csv."""
        if not self._pending:
            return
        losses = torch.stack([p[2] for p in self._pending]).float()
        if self.dist.enabled:
            losses = distributed.all_reduce_sum(losses) / self.dist.world_size
        values = losses.tolist()
        rows = []
        bad = None
        for (step, epoch, _, lr, t), value in zip(self._pending, values):
            rows.append(
                {"step": step, "epoch": epoch, "loss": repr(value), "lr": repr(lr), "time": f"{t:.3f}"}
            )
            if bad is None and not math.isfinite(value):
                bad = (step, epoch, value)
        self._pending.clear()
        if self.main:
            self.train_log.write(rows)
        if bar is not None:
            bar.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{rows[-1]['lr'][:9]}", refresh=False)
        if bad is not None:
            step, epoch, value = bad
            kept = (
                f"last.pt keeps the last good state (epoch {self.epoch}, step {self.epoch * self.steps_per_epoch})"
                if self.epoch
                else "no checkpoint was written yet"
            )
            reason = (
                f"loss became {value} at step {step} (epoch {epoch}); {kept}; lower optimizer.lr, set "
                "trainer.grad_clip, or use trainer.precision=fp32"
            )
            raise TrainingFailed(reason)

    def train_epoch(self) -> None:
        self._samples_at_epoch_start = self.samples
        self.train_model.train()
        epoch = self.epoch + 1
        loader = self.train_data.epoch(self.epoch)
        bar = self._progress(loader, self.steps_per_epoch, f"epoch {epoch}/{self.cfg.epochs}")
        start = time.perf_counter()
        for batch in bar if bar is not None else loader:
            batch = self.task.to_device(batch, self.device, self.cfg.channels_last)
            lr = self._set_lr()
            with self.autocast():
                loss = self.task.loss(self.train_model, batch)
            self._backward(loss)
            samples = self.task.batch_size(batch) * self.dist.world_size
            self._optimizer_step(samples)
            if self.hessian_interval and self.step % self.hessian_interval == self.hessian_interval - 1:
                self._hessian_step(batch)
            self.step += 1
            self.samples += samples
            self._pending.append((self.step, epoch, loss.detach(), lr, self.elapsed()))
            if len(self._pending) >= self.cfg.log_every:
                self._flush(bar)
        self._flush(bar)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_time += time.perf_counter() - start
        if bar is not None:
            bar.close()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        ctx = EvalContext(
            device=self.device,
            autocast=self.autocast,
            all_reduce_sum=distributed.all_reduce_sum,
            all_gather_object=distributed.all_gather_object,
            progress=lambda it: self._progress(it, len(it) if hasattr(it, "__len__") else None, "eval") or it,
        )
        metrics = self.task.evaluate(self.eval_model, self.eval_data, ctx)
        self.model.train()
        return {k: float(v) for k, v in metrics.items()}

    def _record_eval(self, metrics: dict[str, float]) -> bool:
        """Update best-per-metric and final; return whether the primary metric improved."""
        directions = getattr(self.task, "metric_directions", {}) or {}
        improved = False
        for name, value in metrics.items():
            higher = directions.get(name, self.task.higher_is_better)
            old = self.best.get(name)
            better = old is None or (value > old["value"] if higher else value < old["value"])
            if better and math.isfinite(value):
                self.best[name] = {"value": value, "epoch": self.epoch, "step": self.step}
                improved |= name == self.task.primary_metric
        self.final = {"epoch": self.epoch, "step": self.step, "metrics": metrics}
        if self.main:
            self.eval_log.write(
                [{"epoch": self.epoch, "step": self.step, **metrics, "time": f"{self.elapsed():.3f}"}]
            )
        return improved

    def fit(self) -> dict[str, Any]:
        """Train to ``epochs`` (resuming from last.pt when there), evaluating every ``eval_every`` epochs."""
        self.resume()
        self.write_summary("running")
        try:
            while self.epoch < self.cfg.epochs:
                self.train_epoch()
                self.epoch += 1
                line = f"epoch {self.epoch}/{self.cfg.epochs} step {self.step}"
                if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
                    metrics = self.evaluate()
                    if self._record_eval(metrics) and self.main:
                        best = {
                            "model": self.model.state_dict(),
                            "epoch": self.epoch,
                            "step": self.step,
                            "metrics": metrics,
                        }
                        save_checkpoint(best, self.run_dir / "best.pt")
                    line += " " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                self.save()
                self.write_summary("running")
                self._log(f"{line} ({self.elapsed():.1f} s)")
                if self.hooks.on_epoch_end is not None:
                    self.hooks.on_epoch_end(self, self.epoch)
        except TrainingFailed as error:
            self._pending.clear()
            self._rollback_epoch()
            self.write_summary("failed", str(error))
            raise
        except KeyboardInterrupt:
            self._pending.clear()
            self._rollback_epoch()
            self.write_summary(
                "interrupted",
                f"interrupted in epoch {self.epoch + 1}; re-run the same command to resume from last.pt",
            )
            raise
        finally:
            self.train_log.close()
            self.eval_log.close()
        self.write_summary("finished")
        return self.summary

    def _rollback_epoch(self) -> None:
        """After a stop mid-epoch, report the state last.pt holds (the step counter ran ahead of it)."""
        if self.step != self.epoch * self.steps_per_epoch:  # stopped inside an epoch
            self.step = self.epoch * self.steps_per_epoch
            self.samples = self._samples_at_epoch_start
