"""experiments/train/tensorboard_log.py: event files beside the CSVs, read back with TensorBoard's own reader;
a no-op (one warning) when disabled or not installed; a resumed session replaces what came after its step."""

import sys
import warnings

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the harness extra

from experiments.train import tensorboard_log
from experiments.train.tensorboard_log import TensorBoardLog


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_and_eval_scalars_land_beside_the_csvs(tmp_path):
    log = TensorBoardLog(tmp_path)
    for step in (1, 2, 3):
        log.train(step, loss=1.0 / step, lr=1e-3 * (4 - step))
    log.eval(3, {"top1_err": 12.5, "loss": 0.4})
    log.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    got = scalars(tmp_path)
    assert set(got) == {"train/loss", "train/lr", "eval/top1_err", "eval/loss"}
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]
    assert [v for _, v in got["train/loss"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [v for _, v in got["train/lr"]] == pytest.approx([3e-3, 2e-3, 1e-3])
    assert got["eval/top1_err"] == [(3, 12.5)]


def test_a_resumed_session_replaces_the_steps_past_its_checkpoint(tmp_path):
    first = TensorBoardLog(tmp_path)
    for step in range(1, 11):  # stopped after step 10; its checkpoint holds step 6
        first.train(step, loss=1.0, lr=0.1)
    first.eval(5, {"top1_err": 50.0})
    first.close()
    second = TensorBoardLog(tmp_path)
    for step in range(7, 13):
        second.train(step, loss=2.0, lr=0.1)
    second.close()
    loss = scalars(tmp_path)["train/loss"]
    assert [s for s, _ in loss] == list(range(1, 13))  # no step twice
    assert [v for _, v in loss] == [1.0] * 6 + [2.0] * 6
    assert scalars(tmp_path)["eval/top1_err"] == [(5, 50.0)]  # before the resume step: kept


def test_a_non_finite_loss_is_not_plotted(tmp_path):
    log = TensorBoardLog(tmp_path)
    log.train(1, loss=float("nan"), lr=0.1)
    log.train(2, loss=0.5, lr=0.1)
    log.close()
    assert scalars(tmp_path)["train/loss"] == [(2, 0.5)]


def test_disabled_writes_nothing(tmp_path):
    log = TensorBoardLog(tmp_path / "run", enabled=False)
    log.train(1, 0.5, 0.1)
    log.eval(1, {"top1_err": 1.0})
    log.close()
    assert not log.enabled and not (tmp_path / "run").exists()


def test_missing_tensorboard_is_one_warning_then_silence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    monkeypatch.setattr(tensorboard_log, "_warned", False)
    with pytest.warns(RuntimeWarning, match="TensorBoard cannot be imported.*pip install tensorboard"):
        log = TensorBoardLog(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second run in the same process (a sweep) stays quiet
        again = TensorBoardLog(tmp_path)
        again.train(1, 0.5, 0.1)
    log.train(1, 0.5, 0.1)
    log.eval(1, {"top1_err": 1.0})
    log.close()
    assert not log.enabled and list(tmp_path.iterdir()) == []


@pytest.mark.heavy
def test_trainer_tensorboard_true_mirrors_train_csv_and_eval_csv(tmp_path, one_thread):
    """trainer.tensorboard=true through the real trainer: one train/loss point per train.csv row, with the
    same values, and one eval point per eval.csv row; the default writes no event file."""
    import pandas as pd

    from experiments.runs.launch import run_experiment
    from experiments.runs.rundir import run_dir
    from tests.helpers import compose_config

    base = [f"runs_root={tmp_path}", "trainer.epochs=2", "trainer.progress=false"]
    cfg = compose_config([*base, "trainer.tensorboard=true"])
    run_experiment(cfg)
    path = run_dir(cfg)
    train, evals = pd.read_csv(path / "train.csv"), pd.read_csv(path / "eval.csv")
    loss = scalars(path)["train/loss"]
    assert [step for step, _ in loss] == train.step.tolist()
    assert [value for _, value in loss] == pytest.approx(train.loss.tolist(), rel=1e-6)
    assert [step for step, _ in scalars(path)["eval/top1_err"]] == evals.step.tolist()
    plain = compose_config([*base, "seed=1"])
    run_experiment(plain)
    assert not list(run_dir(plain).glob("events.out.tfevents*"))
