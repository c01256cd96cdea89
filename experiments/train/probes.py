"""Measurements a run can ask for that change nothing it trains: optimizer telemetry (``optim.csv``, every
``trainer.optim_stats_every`` steps; experiments/train/telemetry.py) and the eval-mode, full-batch, float64
training loss (``full_loss.csv``, at ``trainer.full_loss_steps`` and, with ``trainer.full_loss_at_eval``, at
every evaluation; experiments/train/landmark_loss.py). No random number is drawn from the training streams
and no weight is touched, so a run with probes trains exactly as one without (tests pin train.csv)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from experiments.train import collectives
from experiments.train.config import TrainerConfig
from experiments.train.landmark_loss import full_batch_loss
from experiments.train.telemetry import OptimTelemetry

if TYPE_CHECKING:
    from experiments.train.trainer import Trainer


class Probes:
    """The probes of one run; every method is a no-op for what was not asked for."""

    def __init__(self, cfg: TrainerConfig, optimizer, train_eval_data: Iterable | None) -> None:
        every = cfg.optim_stats_every
        self.telemetry = OptimTelemetry(optimizer, every, cfg.optim_stats_eps) if every else None
        self.full_steps = {int(t) for t in cfg.full_loss_steps}
        self.full_at_eval = cfg.full_loss_at_eval
        if (self.full_steps or self.full_at_eval) and train_eval_data is None:
            raise ValueError(
                "trainer.full_loss_steps/full_loss_at_eval need the training set as an evaluation loader, and "
                "this run has none (a device-resident loader): set dataset.device_resident=false or drop the keys."
            )
        self.train_eval_data = train_eval_data

    def before_step(self, trainer: Trainer) -> None:
        """Just before optimizer step ``trainer.step + 1``: keep the weights its update is measured from."""
        if self.telemetry is not None and trainer.main and self.telemetry.due(trainer.step + 1):
            self.telemetry.snapshot()

    def after_step(self, trainer: Trainer) -> None:
        """After step ``trainer.step``: its telemetry rows (one host transfer) and a landmark loss when due."""
        if self.telemetry is not None and trainer.main and self.telemetry.due(trainer.step):
            trainer.records.optim_rows(self.telemetry.collect(trainer.step))
        if trainer.step in self.full_steps:
            self._full_loss(trainer, "landmark")

    def at_evaluation(self, trainer: Trainer) -> None:
        if self.full_at_eval and trainer.step not in self.full_steps:
            self._full_loss(trainer, "eval")

    def _full_loss(self, trainer: Trainer, at: str) -> None:
        """Every rank computes its shard; the sums are reduced before the division."""
        loss, samples = full_batch_loss(
            trainer.model, trainer.task, self.train_eval_data, trainer.device, collectives.all_reduce_sum
        )
        epoch = -(-trainer.step // trainer.steps_per_epoch)  # the epoch this step belongs to
        trainer.records.full_loss_row(trainer.step, epoch, loss, samples, at)
