"""``python run.py`` with probes: optimizer telemetry, float64 landmark losses and the v-reset (issue 25).

The same Hydra app and run directories as run.py (sweeps with -m, resume, skip); the ``probes`` section of
the config (configs/config.yaml: all off) adds, through the trainer's hooks, without changing what is
trained (no random numbers drawn, no weight touched; tests/scripts/test_probe_run.py checks the train.csv
of a probed run against a plain one):

- ``probes.optim_stats_every: N`` -> ``optim.csv``: every N-th step, one row per param group
  (experiments/train/telemetry.py; ``probes.optim_stats_eps`` is its stated epsilon, in units of lr);
- ``probes.full_loss_steps: [t, ...]`` and ``probes.full_loss_at_eval: true`` -> ``full_loss.csv``
  (step, epoch, full_loss, samples): the eval-mode training loss over the whole training set in float64
  (experiments/train/landmark_loss.py) at those steps and at every evaluation;
- ``probes.reset_v_at: t`` -> AdamX's state restarted at step t (scripts/reset_v.py; ``+probe=reset_v``).

The rows of both CSVs past a resumed run's last.pt are dropped on resume, like train.csv's.

    python -m scripts.probe_run -m experiment=claims_fig5 optimizer=adamx,adam seed=0,1 runs_root=runs/claims
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

import experiments.runs.rundir  # noqa: F401  (registers the path_safe resolver the run directory uses)
from experiments.train.files import CsvLog
from experiments.train.landmark_loss import full_batch_loss
from experiments.train.telemetry import OPTIM_COLUMNS, OptimTelemetry
from experiments.train.trainer import Hooks
from scripts.reset_v import ResetV

FULL_LOSS_COLUMNS = ["step", "epoch", "full_loss", "samples", "at"]
PROBE_KEYS = {"optim_stats_every", "optim_stats_eps", "full_loss_steps", "full_loss_at_eval", "reset_v_at"}


def _row_step(row: dict[str, Any]) -> float:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return float("inf")


class Probes:
    """The hooks of one run, from the ``probes`` settings."""

    def __init__(self, settings: dict[str, Any]) -> None:
        unknown = sorted(set(settings) - PROBE_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown key(s) probes.{', probes.'.join(unknown)}; the keys are {sorted(PROBE_KEYS)}."
            )
        self.every = int(settings.get("optim_stats_every") or 0)
        if self.every < 0:
            raise ValueError(f"probes.optim_stats_every={self.every} must be >= 0 (0: off).")
        self.eps = float(settings.get("optim_stats_eps", 1e-3))
        self.full_steps = {int(t) for t in settings.get("full_loss_steps") or []}
        self.full_at_eval = bool(settings.get("full_loss_at_eval", False))
        at = settings.get("reset_v_at")
        self.reset = ResetV(int(at)) if at is not None else None
        self.telemetry: OptimTelemetry | None = None
        self.snapshot_for: int | None = None
        self.started = False
        self.optim_log: CsvLog | None = None
        self.full_log: CsvLog | None = None
        self._loader: DataLoader | None = None

    @property
    def active(self) -> bool:
        return bool(self.every or self.full_steps or self.full_at_eval or self.reset)

    def hooks(self) -> Hooks:
        return Hooks(on_step_end=self.on_step_end, on_epoch_end=self.on_epoch_end)

    def _start(self, trainer: Any) -> None:
        """First call of a session: open the logs and drop rows a resumed run's last.pt does not cover."""
        self.started = True
        resumed_at = trainer.step - 1  # this hook runs after the session's first step
        run_dir = Path(trainer.run_dir)
        self.optim_log = CsvLog(run_dir / "optim.csv", OPTIM_COLUMNS) if self.every else None
        self.full_log = CsvLog(run_dir / "full_loss.csv", FULL_LOSS_COLUMNS)
        if trainer.main:
            for log in (self.optim_log, self.full_log):
                if log is not None:
                    log.truncate(lambda row: _row_step(row) <= resumed_at)
        if self.every:
            self.telemetry = OptimTelemetry(trainer.optimizer, self.every, self.eps)

    def _train_set_loader(self, trainer: Any) -> DataLoader:
        if self._loader is None:
            loader = getattr(trainer.train_data, "loader", None)
            if loader is None:
                raise ValueError(
                    "probes.full_loss_steps/full_loss_at_eval need the training set as a Dataset; this run's "
                    "loader is device-resident: set dataset.device_resident=false."
                )
            self._loader = DataLoader(
                loader.dataset,
                batch_size=loader.batch_size or 256,
                shuffle=False,
                collate_fn=trainer.task.collate,
            )
        return self._loader

    def _full_loss(self, trainer: Any, at: str) -> None:
        loss, n = full_batch_loss(
            trainer.model, trainer.task, self._train_set_loader(trainer), trainer.device
        )
        if trainer.main and self.full_log is not None:
            epoch = -(-trainer.step // trainer.steps_per_epoch)  # the epoch this step belongs to
            row = {"step": trainer.step, "epoch": epoch, "full_loss": repr(loss), "samples": n, "at": at}
            self.full_log.write([row])

    def on_step_end(self, trainer: Any) -> None:
        if not self.started:
            self._start(trainer)
        t = trainer.step
        if self.telemetry is not None:
            if self.snapshot_for == t:
                rows = self.telemetry.collect(t)
                if trainer.main and self.optim_log is not None:
                    self.optim_log.write(rows)
                self.snapshot_for = None
            if self.telemetry.due(t + 1):
                self.telemetry.snapshot()
                self.snapshot_for = t + 1
        if t in self.full_steps:
            self._full_loss(trainer, "landmark")

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        evaluated = epoch % trainer.cfg.eval_every == 0 or epoch == trainer.cfg.epochs
        if self.full_at_eval and evaluated and trainer.step not in self.full_steps:
            if not self.started:
                self._start(trainer)
            self._full_loss(trainer, "eval")
        if self.reset is not None:
            self.reset.on_epoch_end(trainer, epoch)

    def close(self) -> None:
        for log in (self.optim_log, self.full_log):
            if log is not None:
                log.close()


def probes_of(cfg: DictConfig) -> Probes:
    settings = cfg.get("probes") or {}
    return Probes(
        OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else settings
    )


def execute(cfg: DictConfig, overrides: list[str]) -> int:
    """Run ``cfg`` with its probes; the exit codes of run.py's ``execute`` (0 finished or skipped, 2 a setting
    to fix, 1 failed, 128 + N for a signal N)."""
    from data import DatasetNotFoundError
    from experiments.runs.launch import run_experiment
    from experiments.train.errors import UsageError, one_line
    from experiments.train.trainer import RunInterrupted, TrainingFailed

    try:
        probes = probes_of(cfg)
    except (ValueError, TypeError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    try:
        summary = run_experiment(cfg, overrides, hooks=probes.hooks())
    except (UsageError, DatasetNotFoundError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from last.pt.", file=sys.stderr)
        return 130
    finally:
        probes.close()
    if summary.get("skipped"):
        print(f"already {summary.get('status')}: {summary.get('run_dir')} (pass force=true to run it again)")
    print(f"run directory: {summary.get('run_dir')}  status: {summary.get('status')}")
    return 1 if summary.get("status") == "failed" else 0


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    code = execute(cfg, list(hydra_cfg.overrides.task))
    if code >= 128 or (code and hydra_cfg.mode != RunMode.MULTIRUN):
        sys.exit(code)


if __name__ == "__main__":
    main()
