"""Behaviours of the training loop that a user relies on and that no other test pinned (issue 26, items 1-4
and 10): exact resume at an epoch's end with the device-resident loader, ``checkpoint_every_min`` read as
minutes, a stop at an epoch's last step committing that epoch, the documented per-rank seeding rule, and
every committed file fsynced before the rename that publishes it."""

import os
import random
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train import files
from experiments.train import trainer as trainer_module
from experiments.train.collectives import DistInfo
from experiments.train.files import read_json
from experiments.train.seeding import rank_seed, seed_rank_streams
from experiments.train.trainer import Hooks, RunInterrupted
from tests.helpers import cifar_fixture_overrides, compose_config, tiny_trainer


def run(root, *extra, hooks=None):
    overrides = [f"runs_root={root}", "trainer.progress=false", *extra]
    cfg = compose_config(overrides)
    return run_experiment(cfg, overrides, hooks=hooks), run_dir(cfg)


def signal_at(step, signum=signal.SIGTERM):
    return Hooks(on_step_end=lambda t: os.kill(os.getpid(), signum) if t.step == step else None)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------- 1. device-resident loader, epoch end


@pytest.mark.heavy
def test_resume_at_an_epoch_end_with_the_device_resident_loader_is_exact(tmp_path, one_thread):
    """Stopped at the end of epoch 1 and resumed, epoch 2's permutation and augmentations (the loader's
    generator at the boundary) are those of the straight run: losses and weights equal bit for bit."""
    from data.fixtures import write_fixture

    root = write_fixture("cifar100", tmp_path / "cifar", n_train=64, n_test=16)
    common = [
        *cifar_fixture_overrides(root),
        "dataset.device_resident=true",
        "trainer.epochs=2",
        "trainer.log_every=2",
    ]
    straight, path_a = run(tmp_path / "a", *common)
    per_epoch = straight["steps_per_epoch"]
    with pytest.raises(RunInterrupted):
        run(tmp_path / "b", *common, hooks=signal_at(per_epoch))
    stopped = load(run_dir(compose_config([f"runs_root={tmp_path / 'b'}", *common])) / "last.pt")
    assert (stopped["epoch"], stopped["batch_in_epoch"]) == (1, 0)  # at the boundary, not mid-epoch
    resumed, path_b = run(tmp_path / "b", *common)
    assert resumed["steps"] == straight["steps"] == 2 * per_epoch
    a, b = pd.read_csv(path_a / "train.csv"), pd.read_csv(path_b / "train.csv")
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"), check_exact=True)
    last_a, last_b = load(path_a / "last.pt"), load(path_b / "last.pt")
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    assert torch.equal(last_a["rng"][0]["loader_generator"], last_b["rng"][0]["loader_generator"])


# ---------------------------------------------------------------------- 2. checkpoint_every_min is minutes


class Clock:
    """time.perf_counter for the trainer: 25 s pass per training step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_checkpoint_every_min_is_minutes(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    saves = []
    trainer = tiny_trainer(tmp_path, samples=48, batch_size=4)  # 12 steps in one epoch
    trainer.eval_data = [(torch.randn(4, 4), torch.randint(0, 3, (4,)))]
    trainer.cfg.checkpoint_every_min = 1.0

    def tick(t):
        clock.now += 25.0

    trainer.hooks = Hooks(on_step_end=tick)
    real_save = trainer.save

    def save():
        saves.append(trainer.step)
        real_save()

    trainer.save = save
    trainer.fit()
    # 25 s per step: due once 60 s have passed since the last save, i.e. every third step; the epoch's
    # last step (12) is the epoch-end commit. Seconds would save after every step, hours never.
    assert saves == [3, 6, 9, 12]


# ---------------------------------------------------------------------- 3. a stop at an epoch's last step


def test_a_stop_at_an_epochs_last_step_commits_that_epoch(tmp_path):
    common = ["trainer.epochs=2", "dataset.test_size=1437"]
    with pytest.raises(RunInterrupted, match=r"at step 12, end of epoch 1"):
        run(tmp_path, *common, hooks=signal_at(12))
    path = run_dir(compose_config([f"runs_root={tmp_path}", *common]))
    last = load(path / "last.pt")
    assert (last["epoch"], last["step"], last["batch_in_epoch"]) == (1, 12, 0)  # not (0, 12, 12)
    assert last["final"]["epoch"] == 1  # evaluated
    assert pd.read_csv(path / "eval.csv")[["epoch", "step"]].values.tolist() == [[1, 12]]
    summary = read_json(path / "summary.json")
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("interrupted", 1, 12)
    assert summary["final"]["epoch"] == 1


# ---------------------------------------------------------------------- 4. per-rank seeding


def _streams() -> tuple:
    return torch.rand(4), np.random.rand(2), random.random()


def _seeded(seed: int) -> tuple:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return _streams()


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_each_rank_draws_the_stream_the_documented_rule_gives(rank):
    """seeding.rank_seed's rule: rank 0 keeps the run's seed, rank r > 0 draws from
    (seed * 6364136223 + r * 1442695041 + 1) mod 2**63, in torch, numpy and python alike."""
    seed = 11
    expected = seed if rank == 0 else (seed * 6_364_136_223 + rank * 1_442_695_041 + 1) % 2**63
    assert rank_seed(seed, rank) == expected
    want = _seeded(expected)
    torch.manual_seed(999)  # whatever came before
    seed_rank_streams(seed, rank)
    got = _streams()
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 0), (2, 1)])
def test_the_trainer_reseeds_only_ddp_ranks_of_a_new_run_by_the_rule(tmp_path, monkeypatch, world_size, rank):
    """A one-process run keeps its stream as built (never re-seeded); under DDP each rank of a new run
    re-seeds with (the run's seed, its rank) before its first step."""
    calls = []

    class Started(Exception):
        pass

    def spy(seed, r):
        calls.append((seed, r))
        raise Started

    monkeypatch.setattr(trainer_module, "seed_rank_streams", spy)
    trainer = tiny_trainer(tmp_path, seed=5)
    trainer.dist = DistInfo(rank=rank, world_size=world_size, device=torch.device("cpu"))
    monkeypatch.setattr(trainer, "write_summary", lambda *a, **k: None)
    first = []
    trainer.hooks = Hooks(on_step_end=lambda t: first.append(t.step) or (_ for _ in ()).throw(Started()))
    with pytest.raises(Started):
        trainer.fit()
    if world_size == 1:
        assert calls == [] and first == [1]  # trained a step without any re-seeding
    else:
        assert calls == [(5, rank)] and first == []


# ---------------------------------------------------------------------- 10. durability


def test_every_committed_file_is_fsynced_before_the_rename_that_publishes_it(tmp_path, monkeypatch):
    """last.pt, best.pt and summary.json reach the disk before their rename; eval.csv and train.csv rows
    are on disk before the last.pt that counts them is published."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", Path(path).name, os.fstat(fd).st_size))

    def replace(src, dst):
        events.append(("replace", Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    trainer = tiny_trainer(tmp_path, samples=8, batch_size=4)
    trainer.cfg.epochs = 2
    trainer.eval_data = [(torch.randn(4, 4), torch.randint(0, 3, (4,)))]
    trainer.fit()

    published = [e for e in events if e[0] == "replace"]
    assert {e[2] for e in published} >= {"last.pt", "best.pt", "summary.json"}
    for index, event in enumerate(events):
        if event[0] != "replace":
            continue
        assert events[index - 1][:2] == ("fsync", event[1]), f"{event[2]} renamed before its fsync"
        if event[2] == "last.pt":
            for log in ("train.csv", "eval.csv"):
                synced = [e[2] for e in events[:index] if e[0] == "fsync" and e[1] == log]
                assert synced, f"{log} never fsynced before last.pt"
    # The logs as a whole: every byte written was fsynced at the end.
    for log in ("train.csv", "eval.csv"):
        synced = [e[2] for e in events if e[0] == "fsync" and e[1] == log]
        assert synced[-1] == (tmp_path / log).stat().st_size
