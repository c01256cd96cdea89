"""What the trainer writes about where it stopped and what it keeps from an unfinished first session."""

from __future__ import annotations

import signal

from experiments.train.files import CsvLog
from tests.helpers import tiny_trainer


def test_the_stop_reason_names_step_batch_and_epoch(tmp_path):
    """A signal mid-epoch names the batch within the 1-based epoch; at an epoch's end, that epoch."""
    trainer = tiny_trainer(tmp_path)
    trainer.steps_per_epoch, trainer.epoch, trainer.step = 45, 1, 73
    assert trainer._stop_reason(signal.SIGTERM) == (
        "stopped by SIGTERM at step 73, batch 28 of epoch 2; last.pt holds that step; "
        "re-run the same command to resume"
    )
    trainer.epoch, trainer.step = 2, 90
    assert trainer._stop_reason(signal.SIGUSR1).startswith("stopped by SIGUSR1 at step 90, end of epoch 2;")


def test_a_session_that_stopped_before_its_first_checkpoint_leaves_no_rows(tmp_path):
    """No last.pt: train.csv and eval.csv rows of the stopped session are dropped and best.pt removed, so
    the new session's history starts clean (the header stays)."""
    trainer = tiny_trainer(tmp_path)
    for log, row in (
        (trainer.records.train_log, {"step": 1, "loss": 1.0}),
        (trainer.records.eval_log, {"epoch": 1, "top1_err": 50.0}),
    ):
        CsvLog(log.path, list(row)).write([row])
    (tmp_path / "best.pt").write_bytes(b"old")
    assert trainer.resume() is False
    for log in (trainer.records.train_log, trainer.records.eval_log):
        assert log.path.read_text().count("\n") <= 1  # at most the header
    assert not (tmp_path / "best.pt").exists()


def test_the_progress_bar_of_a_resumed_epoch_counts_only_the_batches_left(tmp_path, monkeypatch):
    """Catches the bar's total counting the batches already trained before a mid-epoch resume."""
    trainer = tiny_trainer(tmp_path, samples=16)  # 4 batches of 4 per epoch
    totals = []

    class Bar(list):  # what the loop uses of a tqdm bar: iteration, set_postfix, close
        def set_postfix(self, **values):
            pass

        def close(self):
            pass

    def progress(iterable, total, desc):
        totals.append((total, desc))
        return Bar(iterable)

    monkeypatch.setattr(trainer, "_progress", progress)
    trainer.step = 1  # one batch of epoch 1 already trained, as after a mid-epoch checkpoint
    trainer.train_epoch()
    assert totals == [(3, "epoch 1/1")] and trainer.step == 4
