"""DDP under torchrun: 2 CPU processes on gloo end with identical parameters on both ranks, equal (to float
rounding) to one process trained with the same global batch when dropout is off; with dropout on, each
rank draws its own masks (per-rank seeds), and a run stopped by SIGTERM on one rank stops on both at the
same step and resumes bit for bit.

Run as a script by torchrun (``python -m torch.distributed.run ... tests/e2e/test_ddp.py OUT``), it is the worker.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import ROOT

# 360 training images, global batch 32 with drop_last: 11 steps; dropout off so both layouts compute the same thing.
OVERRIDES = [
    "trainer.epochs=1",
    "trainer.device=cpu",
    "trainer.progress=false",
    "dataset.test_size=1437",
    "dataset.batch_size=32",
    "dataset.drop_last=true",
    "model.dropout=0.0",
    "trainer.log_every=4",
]


# With dropout: 2 epochs of 11 steps; rank 1 alone gets SIGTERM after step 13, both stop at step 16 (the
# next multiple of log_every, where the ranks agree on the stop flag).
DROPOUT = ["model.dropout=0.2", "trainer.epochs=2"]


def train(out: Path, name: str, extra=(), signal_rank1_at: int | None = None) -> Path:
    """Run the digits config into ``out/name`` and save this rank's final parameters beside it."""
    from hydra import compose, initialize_config_dir

    from experiments.runs.launch import run_experiment
    from experiments.runs.rundir import run_dir
    from experiments.train.trainer import Hooks, RunInterrupted

    overrides = [*OVERRIDES, *extra, f"runs_root={out / name}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    rank = int(os.environ.get("RANK", "0"))

    def save_params(trainer, epoch):
        params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(params, out / f"{name}_rank{rank}.pt")

    def signal_rank1(trainer):
        if rank == 1 and trainer.step == signal_rank1_at:
            os.kill(os.getpid(), signal.SIGTERM)

    hooks = Hooks(on_epoch_end=save_params, on_step_end=signal_rank1 if signal_rank1_at else None)
    try:
        run_experiment(cfg, overrides, hooks=hooks)
    except RunInterrupted as stop:
        (out / f"{name}_stop_rank{rank}.txt").write_text(f"{stop.exit_code} {stop}")
    return run_dir(cfg)


@pytest.mark.slow
def test_two_gloo_processes_match_each_other_and_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    single_dir = train(tmp_path, "single")

    rank0 = torch.load(tmp_path / "ddp_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp_rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single_rank0.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(
            rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=f"DDP != 1 process: {key}"
        )

    ddp_dir = Path(str(single_dir).replace(str(tmp_path / "single"), str(tmp_path / "ddp")))
    ddp_train, one_train = pd.read_csv(ddp_dir / "train.csv"), pd.read_csv(single_dir / "train.csv")
    assert len(ddp_train) == len(one_train) == 11
    assert (ddp_train.lr == one_train.lr).all()
    torch.testing.assert_close(
        torch.tensor(ddp_train.loss.values), torch.tensor(one_train.loss.values), rtol=1e-4, atol=1e-5
    )
    ddp_eval, one_eval = pd.read_csv(ddp_dir / "eval.csv"), pd.read_csv(single_dir / "eval.csv")
    assert abs(ddp_eval.top1_err[0] - one_eval.top1_err[0]) <= 100 / 360 + 1e-9  # at most one image flips
    assert abs(ddp_eval.loss[0] - one_eval.loss[0]) < 1e-4  # sharded evaluation covers all 360 images once
    summary = pd.read_json(ddp_dir / "summary.json", typ="series")
    assert summary["world_size"] == 2 and summary["steps"] == 11

    # Dropout on: the ranks' RNG streams differ (per-rank seeds), so their masks do ...
    straight, stopped = tmp_path / "ddp_dropout", tmp_path / "ddp_stopped"
    straight_dir = Path(str(ddp_dir).replace(str(tmp_path / "ddp"), str(straight)))
    stopped_dir = Path(str(ddp_dir).replace(str(tmp_path / "ddp"), str(stopped)))
    rngs = torch.load(straight_dir / "last.pt", weights_only=True)["rng"]
    assert not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    # ... while the parameters stay identical across ranks.
    for key, value in torch.load(tmp_path / "ddp_dropout_rank0.pt", weights_only=True).items():
        assert torch.equal(value, torch.load(tmp_path / "ddp_dropout_rank1.pt", weights_only=True)[key])
    # SIGTERM on rank 1 alone stopped both ranks at the same step, with last.pt written there ...
    for r in (0, 1):
        code, reason = (tmp_path / f"ddp_stopped_stop_rank{r}.txt").read_text().split(" ", 1)
        assert code == "143" and "SIGTERM at step 16, batch 5 of epoch 2" in reason, reason
    assert pd.read_json(stopped_dir / "summary.json", typ="series")["status"] == "finished"
    # ... and the resumed run equals the uninterrupted one bit for bit.
    a, b = pd.read_csv(straight_dir / "train.csv"), pd.read_csv(stopped_dir / "train.csv")
    assert len(a) == 22
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"), check_exact=True)
    last_a = torch.load(straight_dir / "last.pt", weights_only=True)
    last_b = torch.load(stopped_dir / "last.pt", weights_only=True)
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    # BatchNorm: each rank's last training forward moved its running statistics by its own slice; the
    # trainer gives every rank rank 0's before evaluating, so all evaluate (and last.pt holds) the same.
    bn0, bn1 = (torch.load(tmp_path / f"bn_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert bn0.keys() == bn1.keys() and all(torch.equal(bn0[k], bn1[k]) for k in bn0)
    assert bn0["1.running_mean"].abs().sum() > 0

    # With dropout, DDP and one process agree only in distribution: not the same losses, similar ones.
    one = pd.read_csv(train(tmp_path, "single_dropout", DROPOUT) / "eval.csv")
    two = pd.read_csv(straight_dir / "eval.csv")
    assert one.loss.tolist() != two.loss.tolist()
    assert abs(one.loss.iloc[-1] - two.loss.iloc[-1]) < 0.1 * one.loss.iloc[-1], (one.loss, two.loss)


def test_ranks_split_each_global_batch_of_the_single_process_order():
    from experiments.train.loaders import GlobalBatchSampler

    one = list(GlobalBatchSampler(100, 32, seed=5, rank=0, world_size=1, drop_last=True))
    ranks = [list(GlobalBatchSampler(100, 32, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == 96 and all(len(r) == 48 for r in ranks)
    for b in range(3):
        merged = ranks[0][16 * b : 16 * (b + 1)] + ranks[1][16 * b : 16 * (b + 1)]
        assert merged == one[32 * b : 32 * (b + 1)]
    assert not set(ranks[0]) & set(ranks[1])
    sampler = GlobalBatchSampler(100, 32, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != list(GlobalBatchSampler(100, 32, seed=5))  # a new order every epoch ...
    again = GlobalBatchSampler(100, 32, seed=5)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # ... replayed exactly on resume
    assert len(list(GlobalBatchSampler(100, 32, seed=5, drop_last=False))) == 100
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        GlobalBatchSampler(100, 32, seed=0, world_size=3)


def train_batchnorm(out: Path) -> None:
    """A BatchNorm model trained on 2 ranks; each rank saves the buffers it evaluated with."""
    from experiments.tasks import build_task
    from experiments.train.collectives import DistInfo
    from experiments.train.loaders import eval_loader, train_loader
    from experiments.train.trainer import Hooks, Trainer, TrainerConfig

    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    task = build_task("classification", num_classes=3)

    def save_buffers(trainer, epoch):
        buffers = {k: v.clone() for k, v in trainer.model.named_buffers()}
        torch.save(buffers, out / f"bn_rank{rank}.pt")

    Trainer(
        task=task,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_data=train_loader(data, task.collate, 16, seed=0, rank=rank, world_size=2),
        eval_data=eval_loader(data, task.collate, 16, rank=rank, world_size=2),
        lr_factor=lambda step: 1.0,
        run_dir=out / "bn",
        config=TrainerConfig(device="cpu", progress=False),
        dist=DistInfo(rank=rank, world_size=2),
        hooks=Hooks(on_epoch_end=save_buffers),
    ).fit()


def test_ddp_drops_the_trailing_partial_global_batch_that_one_process_keeps():
    """The one documented difference in data order: with dataset.drop_last=false a single process trains
    the last, partial global batch (45 steps on the demo's 1,437 images); N processes drop it (44) so that
    every rank takes the same steps. With drop_last=true both take 44."""
    from experiments.train.loaders import GlobalBatchSampler

    assert GlobalBatchSampler(1437, 32, seed=0, drop_last=False).num_batches() == 45
    assert GlobalBatchSampler(1437, 32, seed=0, drop_last=False, world_size=2).num_batches() == 44
    assert GlobalBatchSampler(1437, 32, seed=0, drop_last=True).num_batches() == 44


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from experiments.runs import devices

    # One process group for all four runs: re-initialising gloo on the agent's store is not reliable.
    teardown, devices.teardown = devices.teardown, lambda *args: None
    out = Path(sys.argv[1])
    train(out, "ddp")
    train(out, "ddp_dropout", DROPOUT)
    train(out, "ddp_stopped", DROPOUT, signal_rank1_at=13)
    train(out, "ddp_stopped", DROPOUT)  # the rerun resumes
    train_batchnorm(out)
    teardown()
