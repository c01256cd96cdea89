"""One trainer for every task: steps, per-step LR, mixed precision, SophiaG's Hessian refresh, DDP,
evaluation, CSV logs, atomic checkpoints and exact resume (at an epoch end or mid-epoch).

The task decides what a batch means; the trainer decides when things happen. last.pt is the commit point:
at an epoch end the eval row, then last.pt, then best.pt (same weights), then summary.json (_end_epoch);
checkpoint.py says what last.pt holds, records.py what the logs do (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from experiments.train import checkpoint, collectives, hessian, records
from experiments.train.collectives import DistInfo
from experiments.train.config import PRECISIONS, TrainerConfig
from experiments.train.errors import RunInterrupted, TrainingFailed, outcome
from experiments.train.files import save_checkpoint
from experiments.train.loaders import EpochLoader
from experiments.train.placement import apply_tf32, place_model
from experiments.train.probes import Probes
from experiments.train.provenance import git_commit, versions
from experiments.train.seeding import seed_rank_streams
from experiments.train.signals import StopRequests, stop_reason
from experiments.train.task import EvalContext, Task

__all__ = ["Hooks", "RunInterrupted", "Trainer", "TrainerConfig", "TrainingFailed"]


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
        train_eval_data: Iterable | None = None,
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
        hessian.check(task, optimizer, hessian_interval)

        self.model, self.train_model, self.eval_model = place_model(model, config, self.dist)

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
        self.environment = {"versions": versions(), "git_commit": git_commit()}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._session_start = time.perf_counter()
        self.summary: dict[str, Any] = {}
        self._pending: list[tuple[int, int, torch.Tensor, float, float]] = []
        self.records = records.Records(self.run_dir, self.main, config.tensorboard)
        self.probes = Probes(config, optimizer, train_eval_data)  # optim.csv, full_loss.csv: off unless asked

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._session_start

    def _progress(self, iterable: Iterable, total: int | None, desc: str) -> Any:
        return records.progress_bar(iterable, total, desc, self.cfg.progress, self.main)

    def _log(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def _train_time(self) -> float:
        running = time.perf_counter() - self._train_clock if self._train_clock is not None else 0.0
        return self.train_time + running

    def _snapshot(self) -> dict[str, Any]:
        """The counters last.pt holds, to report after a stop or failure instead of the in-flight ones."""
        return copy.deepcopy({key: getattr(self, key) for key in checkpoint.COUNTERS})

    def _rollback(self) -> None:
        """Make the in-memory counters (what summary.json reports) those of the last commit."""
        for key, value in copy.deepcopy(self._committed).items():
            setattr(self, key, value)

    def state_dict(self) -> dict[str, Any]:
        return checkpoint.training_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        checkpoint.restore(self, state)
        self._committed = self._snapshot()

    def save(self) -> None:
        """Commit last.pt at this step (pending loss rows first); a second Ctrl-C waits for the commit."""
        self._flush()
        state = self.state_dict()  # every rank joins the RNG gather
        with self._stop.commit() if self._stop is not None else contextlib.nullcontext():
            if self.main:
                save_checkpoint(state, self.run_dir / "last.pt")
            self._committed = self._snapshot()
        collectives.barrier()
        self._last_save = time.perf_counter()

    def resume(self) -> bool:
        """Continue from last.pt if any: logs cut to its step (torn rows too), best.pt made the one it records."""
        state = checkpoint.load_last(self.run_dir)
        if state is None:
            self.records.keep_until(-1)  # files of a session that stopped before its first checkpoint
            if self.main:
                (self.run_dir / "best.pt").unlink(missing_ok=True)
            return False
        self.load_state_dict(state)
        self.records.keep_until(self.step)
        if self.main:
            done = checkpoint.reconcile_best(self)
            if done:
                self._log(done)
        where = f"epoch {self.epoch}, step {self.step}"
        if self.step % self.steps_per_epoch:
            where += f" (batch {self.step - self.epoch * self.steps_per_epoch} of epoch {self.epoch + 1})"
        self._log(f"resuming {self.run_dir} from {where}")
        return True

    def write_summary(self, status: str, reason: str | None = None) -> None:
        self.summary = records.write_summary(self, status, reason) or self.summary

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
        args = (self.task, self.train_model, self.optimizer, batch, self.autocast, self.scaler)
        self.hessian_skipped += not hessian.refresh(*args)  # fp16: a refresh with non-finite grads is skipped

    def _flush(self, bar: Any = None) -> None:
        """Move pending losses to the host in one sync, log them, and stop on the first non-finite one."""
        if not self._pending:
            return
        losses = torch.stack([p[2] for p in self._pending]).float()
        if self.dist.enabled:
            losses = collectives.all_reduce_sum(losses) / self.dist.world_size
        rows = [
            (step, epoch, value, lr, t)
            for (step, epoch, _, lr, t), value in zip(self._pending, losses.tolist())
        ]
        self._pending.clear()
        self.records.train_rows(rows)
        if bar is not None:
            bar.set_postfix(loss=f"{rows[-1][2]:.4f}", lr=f"{repr(rows[-1][3])[:9]}", refresh=False)
        bad = next((row for row in rows if not math.isfinite(row[2])), None)
        if bad is not None:
            raise TrainingFailed.nonfinite(*bad[:3], self._committed)

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
            self.probes.before_step(self)
            self._optimizer_step(samples)
            if self.hessian_interval and self.step % self.hessian_interval == self.hessian_interval - 1:
                self._hessian_step(batch)
            self.step += 1
            self.samples += samples
            self._pending.append((self.step, epoch, loss.detach(), lr, self.elapsed()))
            self.probes.after_step(self)
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
        every = self.cfg.checkpoint_every_s
        due = every is not None and time.perf_counter() - self._last_save >= every
        if not self.dist.enabled:
            return signum, due
        if not boundary and self.step % self.cfg.log_every:
            return 0, False
        signum, due = collectives.all_max([signum, int(due)], self.device)
        return signum, bool(due)

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
        return stop_reason(signum, self.step, self.epoch, self.step - self.epoch * self.steps_per_epoch)

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
        improved = records.update_best(self.best, metrics, self.task, self.epoch, self.step)
        self.final = {"epoch": self.epoch, "step": self.step, "metrics": metrics}
        self.records.eval_row(self.epoch, self.step, metrics, self.elapsed())
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
            self.probes.at_evaluation(self)
            self._point("eval_logged")
            line += " " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.save()
        self._point("last_saved")
        if improved:
            if self.main:
                save_checkpoint(checkpoint.best_state(self, metrics), self.run_dir / "best.pt")
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
        apply_tf32(self.cfg.tf32)
        with StopRequests() as self._stop:
            if not self.resume() and self.dist.enabled:  # outside the try: a refused resume fails nothing
                seed_rank_streams(self.seed, self.dist.rank)  # a new run: each rank its own dropout masks
            self.write_summary("running")
            self._last_save = time.perf_counter()
            try:
                while self.epoch < self.cfg.epochs:
                    self.train_epoch()
                    self._end_epoch()
                    signum, _ = self._poll(boundary=True) if self.epoch < self.cfg.epochs else (0, False)
                    if signum:
                        raise RunInterrupted(signum, self._stop_reason(signum))
            except (Exception, KeyboardInterrupt) as error:
                self._pending.clear()
                self._rollback()
                if isinstance(error, KeyboardInterrupt):  # rows past last.pt go now: the directory agrees
                    self.records.keep_until(self.step)
                self.write_summary(*outcome(error, self.epoch, self.step))
                raise
            finally:
                self.records.close()
                self._train_clock = None
                self._stop = None
        self.write_summary("finished")
        return self.summary
