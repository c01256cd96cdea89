"""One trainer for every task: steps, per-step LR, mixed precision, SophiaG's Hessian refresh, DDP,
evaluation, CSV logs, atomic checkpoints and exact resume (at an epoch end or mid-epoch).

The task decides what a batch means (loss, metrics); the trainer decides when things happen.
last.pt is the commit point: at an epoch end the eval row is written, then last.pt, then best.pt (from the
same weights), then summary.json; a resume truncates the CSVs to last.pt and rebuilds a best.pt that a stop
between the two renames left behind (docs/harness.md, "Signals, interruption and mid-epoch resume").
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from experiments.train import collectives
from experiments.train.collectives import DistInfo
from experiments.train.files import CsvLog, save_checkpoint, write_json
from experiments.train.loaders import EpochLoader
from experiments.train.provenance import git_commit, versions
from experiments.train.seeding import rng_state, seed_rank_streams, set_rng_state
from experiments.train.signals import StopRequests
from experiments.train.task import EvalContext, Task
from experiments.train.tensorboard_log import TensorBoardLog

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
    checkpoint_every_min: float | None = 30.0  # mid-epoch last.pt at most this often; null: epoch ends only
    tf32: bool = False  # TF32 matmuls and cuDNN convolutions on Ampere+ GPUs (the paper's protocol is fp32)
    jobs_per_gpu: int = (
        1  # device=auto in a parallel sweep: runs that may share one GPU (experiments/runs/gpu_slots.py)
    )
    tensorboard: bool = False  # event files beside the CSVs (the CSVs stay the record)

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
        if self.jobs_per_gpu < 1:
            raise ValueError(f"trainer.jobs_per_gpu must be >= 1, got {self.jobs_per_gpu}.")
        if self.checkpoint_every_min is not None and not self.checkpoint_every_min > 0:
            raise ValueError(
                f"trainer.checkpoint_every_min must be positive or null, got {self.checkpoint_every_min}."
            )


class RunInterrupted(Exception):
    """A stop signal arrived; the trainer finished the step in flight and committed last.pt at it.

    ``exit_code`` is the shell's convention for death by that signal (SIGINT 130, SIGTERM 143,
    SIGUSR1 138), so a scheduler sees what happened while the run directory stays resumable.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class TrainingFailed(RuntimeError):
    """The run stopped on a non-finite loss; the message is the one-line reason."""


@dataclass
class Hooks:
    """Test and extension points.

    ``on_epoch_end(trainer, epoch)`` runs after last.pt, best.pt and summary.json are written;
    ``on_step_end(trainer)`` after every optimizer step (before the stop check, so a signal sent from it
    stops at that step); ``on_point(trainer, name)`` at the epoch end's commit points: ``evaluating``,
    ``eval_logged``, ``last_saved`` and ``best_saved`` (the fault-injection tests stop runs there).
    """

    on_epoch_end: Callable[[Trainer, int], None] | None = None
    on_step_end: Callable[[Trainer], None] | None = None
    on_point: Callable[[Trainer, str], None] | None = None


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
        identity: dict | None = None,
        seed: int | None = None,
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
        self.identity = identity  # what the launcher checks on resume; saved in every checkpoint
        self.seed = int(seed if seed is not None else self.info.get("seed", 0))  # DDP ranks' own streams

        dtype = PRECISIONS[config.precision]
        self.amp_dtype = dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype is torch.float16 else None
        if hessian_interval and not hasattr(optimizer, "update_hessian"):
            raise ValueError(
                f"optimizer.hessian_update_interval={hessian_interval} is set but {type(optimizer).__name__} "
                "has no update_hessian(); remove the key or use optimizer=sophiag."
            )
        if hessian_interval and not getattr(task, "has_sampled_loss", True):
            raise ValueError(
                f"optimizer.hessian_update_interval is set but task {task.name!r} defines no sampled_loss, "
                "which SophiaG's Hessian estimate needs; use another optimizer for this task."
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
        self.step = 0  # completed optimizer steps (step - epoch * steps_per_epoch: batches done this epoch)
        self.best: dict[str, dict[str, float]] = {}
        self.final: dict[str, Any] = {}
        self.elapsed_before = 0.0  # wall time of earlier sessions of this run
        self.train_time = 0.0  # finished training time; a running epoch adds its part (_train_time)
        self._train_clock: float | None = None
        self.samples = 0
        self.hessian_skipped = 0  # fp16: Hessian refreshes skipped for non-finite gradients
        self._committed = self._snapshot()  # what last.pt holds: reported after a stop or failure
        self._loader_state: torch.Tensor | None = None  # a device loader's generator at a mid-epoch resume
        self._stop: StopRequests | None = None
        self._last_save = time.perf_counter()
        self._environment = {"versions": versions(), "git_commit": git_commit()}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._session_start = time.perf_counter()
        self.summary: dict[str, Any] = {}
        self._pending: list[tuple[int, int, torch.Tensor, float, float]] = []
        self.train_log = CsvLog(self.run_dir / "train.csv", ["step", "epoch", "loss", "lr", "time"])
        self.eval_log = CsvLog(self.run_dir / "eval.csv", ["epoch", "step"])
        self.tb = TensorBoardLog(self.run_dir, enabled=config.tensorboard and self.main)

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

    def _train_time(self) -> float:
        running = time.perf_counter() - self._train_clock if self._train_clock is not None else 0.0
        return self.train_time + running

    def _snapshot(self) -> dict[str, Any]:
        """The counters last.pt holds, to report after a stop or failure instead of the in-flight ones."""
        keys = ("epoch", "step", "samples", "best", "final")
        return copy.deepcopy({key: getattr(self, key) for key in keys})

    def _rollback(self) -> None:
        """Make the in-memory counters (what summary.json reports) those of the last commit."""
        for key, value in copy.deepcopy(self._committed).items():
            setattr(self, key, value)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, at a step boundary (an epoch end or mid-epoch)."""
        own_rng = {**rng_state(), "loader_generator": self.train_data.generator.get_state()}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.step - self.epoch * self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "best": self.best,
            "final": self.final,
            "elapsed": self.elapsed(),
            "train_time": self._train_time(),
            "samples": self.samples,
            "hessian_skipped": self.hessian_skipped,
            "started": self.started,
            "identity": self.identity,
            "rng": collectives.all_gather_object(own_rng),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_steps = int(state.get("steps_per_epoch", self.steps_per_epoch))
        if saved_steps != self.steps_per_epoch:  # a batch_in_epoch would point at other samples
            raise ValueError(
                f"{self.run_dir / 'last.pt'} was written with {saved_steps} steps per epoch and this run has "
                f"{self.steps_per_epoch} (another batch size, data set size or number of processes); resume "
                "it as it was started, or pass force=true to start over."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # places state like torch does (step on CPU)
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best, self.final = dict(state["best"]), dict(state["final"])
        self.elapsed_before, self.train_time = float(state["elapsed"]), float(state["train_time"])
        self.samples, self.started = int(state["samples"]), state["started"]
        self.hessian_skipped = int(state.get("hessian_skipped", 0))
        rngs = state["rng"]
        own = rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0]
        set_rng_state(own)
        mid_epoch = self.step - self.epoch * self.steps_per_epoch > 0
        self._loader_state = own.get("loader_generator") if mid_epoch else None
        self._session_start = time.perf_counter()
        self._committed = self._snapshot()

    def save(self) -> None:
        """Commit last.pt at this step: pending loss rows first, then the checkpoint (atomic rename)."""
        self._flush()
        state = self.state_dict()  # every rank joins the RNG gather
        if self.main:
            save_checkpoint(state, self.run_dir / "last.pt")
        collectives.barrier()
        self._committed = self._snapshot()
        self._last_save = time.perf_counter()

    def resume(self) -> bool:
        """Continue from last.pt when it exists; drop log rows written after it, torn ones included, and
        make best.pt the one last.pt records."""
        path = self.run_dir / "last.pt"
        if self.main:
            for log in (self.train_log, self.eval_log):
                _drop_torn_line(log.path)
        if not path.exists():
            if self.main:  # files of a session that stopped before its first checkpoint
                self.train_log.truncate(lambda row: False)
                self.eval_log.truncate(lambda row: False)
                (self.run_dir / "best.pt").unlink(missing_ok=True)
            return False
        # On the CPU first: load_state_dict then places each tensor (an optimizer's step counters stay on
        # the CPU, as torch keeps them; map_location=cuda would make RAdam sync once per parameter).
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if self.main:
            step = self.step
            self.train_log.truncate(lambda row: _row_step(row) <= step)
            self.eval_log.truncate(lambda row: _row_step(row) <= step)
            self._reconcile_best()
        where = f"epoch {self.epoch}, step {self.step}"
        if self.step % self.steps_per_epoch:
            where += f" (batch {self.step - self.epoch * self.steps_per_epoch} of epoch {self.epoch + 1})"
        self._log(f"resuming {self.run_dir} from {where}")
        return True

    def _best_state(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "epoch": self.epoch, "step": self.step, "metrics": metrics}

    def _reconcile_best(self) -> None:
        """best.pt must be the checkpoint last.pt's best record names. A stop after last.pt's rename and
        before best.pt's leaves the old one: its weights are last.pt's own, so it is rebuilt from them."""
        path = self.run_dir / "best.pt"
        record = self.best.get(self.task.primary_metric)
        on_disk = None
        if path.exists():
            try:
                on_disk = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
            except Exception:  # a torn or foreign file: treated as absent
                on_disk = None
        if record is not None and on_disk == int(record["step"]):
            return
        if record is not None and int(record["step"]) == self.step and self.final.get("step") == self.step:
            save_checkpoint(self._best_state(self.final["metrics"]), path)
            self._log(f"rebuilt best.pt from last.pt (step {self.step})")
        elif path.exists():
            path.unlink()
            self._log(f"removed best.pt (step {on_disk}): last.pt records no best checkpoint at that step")

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
            "train_time_s": round(self._train_time(), 3),
            "throughput_samples_per_s": round(self.samples / self._train_time(), 2)
            if self._train_time()
            else None,
            "peak_memory_bytes": int(peak),
            "device": str(self.device)
            + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else ""),
            "world_size": self.dist.world_size,
            "precision": self.cfg.precision,
            "tf32": self.cfg.tf32,
            **({"hessian_refreshes_skipped": self.hessian_skipped} if self.hessian_interval else {}),
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
        """SophiaG: refresh the Hessian EMA from the gradient of the sampled-label loss.

        Under fp16 the pass is loss-scaled like the training step (the GradScaler's current scale), the
        gradients unscaled before ``update_hessian``, and a refresh whose gradients are not finite is
        skipped (counted in summary.json); the scale itself is left to the training steps.
        """
        with self.autocast():
            loss = self.task.sampled_loss(self.train_model, batch)
        if loss is None:
            raise ValueError(
                f"optimizer.hessian_update_interval is set but task {self.task.name!r} defines no "
                "sampled_loss; SophiaG needs one."
            )
        if self.scaler is None:
            loss.backward()
            self.optimizer.update_hessian()
        else:
            scale = self.scaler.get_scale()
            (loss * scale).backward()
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch._foreach_mul_(grads, 1.0 / scale)
            if not grads or torch.stack([torch.isfinite(g).all() for g in grads]).all():
                self.optimizer.update_hessian()
            else:
                self.hessian_skipped += 1
        self.optimizer.zero_grad(set_to_none=True)

    def _flush(self, bar: Any = None) -> None:
        """Move pending losses to the host in one sync, check them, and append them to train.csv."""
        if not self._pending:
            return
        losses = torch.stack([p[2] for p in self._pending]).float()
        if self.dist.enabled:
            losses = collectives.all_reduce_sum(losses) / self.dist.world_size
        values = losses.tolist()
        rows = []
        bad = None
        for (step, epoch, _, lr, t), value in zip(self._pending, values):
            rows.append(
                {"step": step, "epoch": epoch, "loss": repr(value), "lr": repr(lr), "time": f"{t:.3f}"}
            )
            self.tb.train(step, value, lr)  # a no-op unless trainer.tensorboard (rank 0 only)
            if bad is None and not math.isfinite(value):
                bad = (step, epoch, value)
        self._pending.clear()
        if self.main:
            self.train_log.write(rows)
        if bar is not None:
            bar.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{rows[-1]['lr'][:9]}", refresh=False)
        if bad is not None:
            step, epoch, value = bad
            saved = self._committed
            kept = (
                f"last.pt keeps the last good state (epoch {saved['epoch']}, step {saved['step']})"
                if saved["step"]
                else "no checkpoint was written yet"
            )
            reason = (
                f"loss became {value} at step {step} (epoch {epoch}); {kept}; lower optimizer.lr, set "
                "trainer.grad_clip, or use trainer.precision=fp32"
            )
            raise TrainingFailed(reason)

    def train_epoch(self) -> None:
        """Train the rest of epoch ``self.epoch + 1`` (all of it, or from a mid-epoch checkpoint's batch).

        After each step a stop request commits last.pt at that step and raises RunInterrupted, and a
        periodic checkpoint (``checkpoint_every_min``) is written when due; neither after an epoch's last
        step, whose commit follows in ``fit``.
        """
        self.train_model.train()
        epoch = self.epoch + 1
        done = self.step - self.epoch * self.steps_per_epoch  # batches of this epoch already trained
        loader = self.train_data.epoch(self.epoch, done, self._loader_state)
        self._loader_state = None
        bar = self._progress(loader, self.steps_per_epoch - done, f"epoch {epoch}/{self.cfg.epochs}")
        self._train_clock = time.perf_counter()
        for position, batch in enumerate(bar if bar is not None else loader, done + 1):
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
            if self.hooks.on_step_end is not None:
                self.hooks.on_step_end(self)
            if position < self.steps_per_epoch:
                self._check_stop(bar)
        self._flush(bar)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_time = self._train_time()
        self._train_clock = None
        if bar is not None:
            bar.close()

    def _poll(self, boundary: bool = False) -> tuple[int, bool]:
        """(the stop signal or 0, whether a periodic checkpoint is due), the same on every rank.

        One process polls after every step. Under DDP the ranks agree by an all-reduce (max) every
        ``log_every`` steps and at epoch ends, so a signal takes effect within ``log_every`` steps.
        """
        signum = (self._stop.signum or 0) if self._stop is not None else 0
        every = self.cfg.checkpoint_every_min
        due = every is not None and time.perf_counter() - self._last_save >= 60.0 * every
        if not self.dist.enabled:
            return signum, due
        if not boundary and self.step % self.cfg.log_every:
            return 0, False
        flags = torch.tensor([signum, int(due)], device=self.device)
        torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])

    def _check_stop(self, bar: Any = None) -> None:
        """Mid-epoch: on a stop request commit last.pt at this step and raise; else checkpoint if due."""
        signum, due = self._poll()
        if signum:
            self.save()
            raise RunInterrupted(signum, self._stop_reason(signum))
        if due:
            self.save()
            self.write_summary("running")

    def _stop_reason(self, signum: int) -> str:
        name = signal.Signals(signum).name
        where = f"step {self.step}"
        done = self.step - self.epoch * self.steps_per_epoch
        where += f", batch {done} of epoch {self.epoch + 1}" if done else f", end of epoch {self.epoch}"
        return f"stopped by {name} at {where}; last.pt holds that step; re-run the same command to resume"

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        ctx = EvalContext(
            device=self.device,
            autocast=self.autocast,
            all_reduce_sum=collectives.all_reduce_sum,
            all_gather_object=collectives.all_gather_object,
            progress=lambda it: self._progress(it, len(it) if hasattr(it, "__len__") else None, "eval") or it,
        )
        if self.dist.enabled:  # evaluate with the buffers last.pt saves (rank 0's), on every rank
            for buffer in self.model.buffers():
                torch_dist.broadcast(buffer, 0)
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
            self.tb.eval(self.step, metrics)
        return improved

    def _point(self, name: str) -> None:
        if self.hooks.on_point is not None:
            self.hooks.on_point(self, name)

    def _end_epoch(self) -> None:
        """Evaluate when due, then commit: eval row, last.pt (the commit point), best.pt, summary.json."""
        self.epoch += 1
        line = f"epoch {self.epoch}/{self.cfg.epochs} step {self.step}"
        improved, metrics = False, {}
        if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
            self._point("evaluating")
            metrics = self.evaluate()
            improved = self._record_eval(metrics)
            self._point("eval_logged")
            line += " " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.save()
        self._point("last_saved")
        if improved:
            if self.main:
                save_checkpoint(self._best_state(metrics), self.run_dir / "best.pt")
            self._point("best_saved")
        self.write_summary("running")
        self._log(f"{line} ({self.elapsed():.1f} s)")
        if self.hooks.on_epoch_end is not None:
            self.hooks.on_epoch_end(self, self.epoch)

    def fit(self) -> dict[str, Any]:
        """Train to ``epochs`` (resuming from last.pt when there), evaluating every ``eval_every`` epochs.

        SIGTERM, SIGUSR1 and SIGINT stop at the next step boundary with last.pt written there and raise
        RunInterrupted (status ``interrupted``); any other exception marks the run ``failed`` with a
        one-line reason and propagates. The signal handlers live only while fit() runs.
        """
        torch.backends.cuda.matmul.allow_tf32 = self.cfg.tf32
        torch.backends.cudnn.allow_tf32 = self.cfg.tf32
        with StopRequests() as stop:
            self._stop = stop
            try:
                return self._fit()
            finally:
                self._stop = None

    def _fit(self) -> dict[str, Any]:
        if not self.resume() and self.dist.enabled:
            seed_rank_streams(self.seed, self.dist.rank)  # a new run: each rank its own dropout masks
        self.write_summary("running")
        self._last_save = time.perf_counter()
        try:
            while self.epoch < self.cfg.epochs:
                self.train_epoch()
                self._end_epoch()
                if self.epoch < self.cfg.epochs:
                    signum, _ = self._poll(boundary=True)
                    if signum:
                        raise RunInterrupted(signum, self._stop_reason(signum))
        except RunInterrupted as stop:
            self._pending.clear()
            self._rollback()
            self.write_summary("interrupted", str(stop))
            raise
        except TrainingFailed as error:
            self._pending.clear()
            self._rollback()
            self.write_summary("failed", str(error))
            raise
        except KeyboardInterrupt:
            self._pending.clear()
            self._rollback()
            if self.main:  # rows past last.pt go now, so that the directory agrees with itself at once
                for log in (self.train_log, self.eval_log):
                    log.close()
                    _drop_torn_line(log.path)
                    log.truncate(lambda row: _row_step(row) <= self.step)
            self.write_summary(
                "interrupted",
                f"interrupted in epoch {self.epoch + 1}; last.pt holds step {self.step}; re-run the same "
                "command to resume from it",
            )
            raise
        except Exception as error:
            self._pending.clear()
            self._rollback()
            first = (str(error).strip().splitlines() or [""])[0]
            self.write_summary("failed", f"{type(error).__name__}: {first}")
            raise
        finally:
            self.train_log.close()
            self.eval_log.close()
            self.tb.close()
            self._train_clock = None
        self.write_summary("finished")
        return self.summary


def _row_step(row: dict[str, str | None]) -> float:
    """A CSV row's step, or infinity for a row that is not whole (dropped by a resume's truncation)."""
    try:
        if any(value is None for value in row.values()) or None in row:
            return math.inf
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return math.inf


def _drop_torn_line(path: Path) -> None:
    """Cut a final line without its newline (a kill in mid-append) so that no prefix passes for a row."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
