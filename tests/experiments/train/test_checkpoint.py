"""Interrupted runs resume exactly: train.csv, eval.csv and final weights equal an uninterrupted run's.

Trainer integrity pieces: mid-epoch resume with augmentation (CPU and device-resident loaders), the
checkpoint loaded on the CPU (issue 11.3), SophiaG's loss-scaled Hessian pass under fp16 (11.5), the TF32
switch (11.6), the per-epoch data order cut without loading the skipped batches, per-rank seeds."""

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

import adamx
from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.tasks import build_task
from experiments.train.files import load_checkpoint, read_json
from experiments.train.loaders import GlobalBatchSampler, train_loader
from experiments.train.seeding import rank_seed
from experiments.train.trainer import Hooks, RunInterrupted, Trainer, TrainerConfig
from tests.helpers import cifar_fixture_overrides, compose_config

# ---------------------------------------------------------------- from test_trainer_resume.py: Interrupted runs resume exactly: train.csv, eval.csv and final weights equal an


def make_cfg(root, *extra):
    # 360 training images (12 steps per epoch, the last batch partial), dropout on: RNG state matters.
    overrides = [
        f"runs_root={root}",
        "trainer.epochs=3",
        "trainer.progress=false",
        "trainer.log_every=5",
        "dataset.test_size=1437",
        "model.dropout=0.2",
        *extra,
    ]
    return compose_config(overrides), overrides


def stop_after_epoch(n):
    def hook(trainer, epoch):
        if epoch == n:
            raise KeyboardInterrupt

    return Hooks(on_epoch_end=hook)


def assert_same_run(a: Path, b: Path):
    train_a, train_b = pd.read_csv(a / "train.csv"), pd.read_csv(b / "train.csv")
    assert len(train_a) == 36
    pd.testing.assert_frame_equal(
        train_a.drop(columns="time"), train_b.drop(columns="time"), check_exact=True
    )
    eval_a, eval_b = pd.read_csv(a / "eval.csv"), pd.read_csv(b / "eval.csv")
    pd.testing.assert_frame_equal(eval_a.drop(columns="time"), eval_b.drop(columns="time"), check_exact=True)
    ck_a, ck_b = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ck_a["step"] == ck_b["step"] == 36
    for key in ck_a["model"]:
        assert torch.equal(ck_a["model"][key], ck_b["model"][key]), key
    for sa, sb in zip(ck_a["optimizer"]["state"].values(), ck_b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert read_json(a / "summary.json")["best"] == read_json(b / "summary.json")["best"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg, overrides = make_cfg(tmp_path_factory.mktemp("straight"))
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and summary["steps"] == 36
    return run_dir(cfg)


@pytest.mark.heavy
def test_resume_after_epoch_1_of_3_equals_uninterrupted(tmp_path, reference):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    path = run_dir(cfg)
    summary = read_json(path / "summary.json")
    assert summary["status"] == "interrupted" and "re-run" in summary["reason"]
    assert load_checkpoint(path / "last.pt")["epoch"] == 1
    assert len(pd.read_csv(path / "train.csv")) == 12
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)


@pytest.mark.heavy
def test_resume_after_a_stop_mid_epoch_drops_the_rows_past_last_pt(tmp_path, reference, monkeypatch):
    cfg, overrides = make_cfg(tmp_path)
    original = Trainer._optimizer_step

    def step_then_stop(self, samples):
        original(self, samples)
        if self.step == 18:  # epoch 2, step 19 of 36 in flight
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_optimizer_step", step_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides)
    monkeypatch.undo()
    path = run_dir(cfg)
    assert len(pd.read_csv(path / "train.csv")) == 12  # rows past last.pt were written, then dropped ...
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(path, reference)  # ... and trained again on resume


@pytest.mark.heavy
def test_finished_run_is_skipped_and_force_restarts(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    first = run_experiment(cfg, overrides)
    again = run_experiment(cfg, overrides)
    assert again["skipped"] and again["status"] == "finished" and again["started"] == first["started"]
    cfg.force = True
    forced = run_experiment(cfg, overrides)
    assert not forced.get("skipped") and forced["status"] == "finished"
    assert len(pd.read_csv(run_dir(cfg) / "train.csv")) == 12  # restarted, not appended


def test_resuming_with_a_different_config_is_refused(tmp_path):
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    changed, overrides = make_cfg(tmp_path, "optimizer.lr=0.005")
    with pytest.raises(ValueError, match=r"optimizer\.lr: 0\.001 -> 0\.005.*force=true"):
        run_experiment(changed, overrides)


def test_a_finished_run_with_another_config_is_not_mistaken_for_this_one(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    run_experiment(cfg, overrides)
    other, overrides = make_cfg(tmp_path, "trainer.epochs=1", "optimizer.lr=0.002")
    with pytest.raises(
        ValueError, match=r"optimizer\.lr: 0\.001 -> 0\.002.*experiment_name=lr_\$\{optimizer\.lr\}"
    ):
        run_experiment(other, overrides)


# ---------------------------------------------------------------- from test_trainer_integrity.py: Trainer integrity pieces: mid-epoch resume with augmentation (CPU and device-res


def run(root, *extra, hooks=None):
    overrides = [f"runs_root={root}", "trainer.epochs=1", "trainer.progress=false", *extra]
    cfg = compose_config(overrides)
    return run_experiment(cfg, overrides, hooks=hooks), run_dir(cfg)


def sigterm_at(step):
    return Hooks(on_step_end=lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == step else None)


@pytest.mark.slow
@pytest.mark.parametrize("resident", ["true", "false"])
def test_mid_epoch_resume_replays_the_augmentation_stream(tmp_path, resident, one_thread):
    """CIFAR augments every batch at random: on the device loader's generator (device_resident) or on the
    global RNG (a DataLoader with num_workers=0). Stopped at step 5 and resumed, the run equals a straight one."""
    from data.fixtures import write_fixture

    root = write_fixture("cifar100", tmp_path / "cifar")
    common = [*cifar_fixture_overrides(root), "trainer.log_every=3", f"dataset.device_resident={resident}"]
    straight, path_a = run(tmp_path / "a", *common)
    with pytest.raises(RunInterrupted):
        run(tmp_path / "b", *common, hooks=sigterm_at(5))
    resumed, path_b = run(tmp_path / "b", *common)
    assert resumed["steps"] == straight["steps"] > 5
    a, b = pd.read_csv(path_a / "train.csv"), pd.read_csv(path_b / "train.csv")
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"), check_exact=True)
    last_a = torch.load(path_a / "last.pt", weights_only=True)["model"]
    last_b = torch.load(path_b / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_a_resumed_sampler_cuts_the_order_instead_of_loading_the_skipped_batches():
    full = list(GlobalBatchSampler(100, 32, seed=3, drop_last=False))
    cut = GlobalBatchSampler(100, 32, seed=3, drop_last=False)
    cut.set_epoch(0, start=2)
    assert list(cut) == full[64:] and len(cut) == 36
    ranks = []
    for rank in (0, 1):
        sampler = GlobalBatchSampler(100, 32, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(0, start=1)
        ranks.append(list(sampler))
    assert sorted(ranks[0] + ranks[1]) == sorted(full[32:96])  # global batches 2 and 3, shared

    class Counting(torch.utils.data.Dataset):
        def __init__(self):
            self.loaded = []

        def __len__(self):
            return 100

        def __getitem__(self, i):
            self.loaded.append(i)
            return torch.zeros(1), 0

    data = Counting()
    loader = train_loader(data, torch.utils.data.default_collate, 32, seed=3, drop_last=False)
    assert len(loader) == 4
    batches = list(loader.epoch(0, start=3))
    assert len(batches) == 1 and sorted(data.loaded) == sorted(full[96:])  # batches 1-3 never loaded
    assert len(loader) == 4  # the epoch's length is still the whole epoch


def test_ranks_get_their_own_streams_and_rank_0_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8
    assert rank_seed(7, 1) != rank_seed(8, 1)


@pytest.mark.heavy
def test_resume_loads_last_pt_on_the_cpu_and_lets_load_state_dict_place_it(tmp_path, monkeypatch):
    """Issue 11.3: map_location=cuda would put Adam/RAdam's ``step`` counters on the GPU (a sync per
    parameter in torch's RAdam); the trainer loads on the CPU like torch.load's own default placement."""
    with pytest.raises(RunInterrupted):
        run(tmp_path, "optimizer=radam", "trainer.epochs=2", hooks=sigterm_at(3))
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    placed = {}

    def after(trainer):
        if trainer.step == 4:
            placed.update({k: v for k, v in trainer.optimizer.state_dict()["state"][0].items()})

    summary, _ = run(tmp_path, "optimizer=radam", "trainer.epochs=2", hooks=Hooks(on_step_end=after))
    assert summary["status"] == "finished"
    assert seen and seen[0] == "cpu" and not isinstance(seen[0], torch.device)
    assert placed["step"].device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (issue 11.3 on a GPU)")
def test_on_cuda_resumed_optimizer_steps_stay_on_the_cpu(tmp_path):
    with pytest.raises(RunInterrupted):
        run(tmp_path, "optimizer=radam", "trainer.device=cuda", "trainer.epochs=2", hooks=sigterm_at(3))
    placed = {}

    def after(trainer):
        if trainer.step == 4:
            state = trainer.optimizer.state[next(trainer.model.parameters())]
            placed.update({k: v.device.type for k, v in state.items() if torch.is_tensor(v)})

    run(
        tmp_path, "optimizer=radam", "trainer.device=cuda", "trainer.epochs=2", hooks=Hooks(on_step_end=after)
    )
    assert placed["step"] == "cpu" and placed["exp_avg"] == "cuda"


def _sophia_trainer(tmp_path, precision="fp16"):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    task = build_task("classification", num_classes=4)
    return Trainer(
        task=task,
        model=model,
        optimizer=adamx.SophiaG(model.parameters(), lr=1e-3),
        train_data=train_loader(data, task.collate, 16, seed=0),
        eval_data=[],
        lr_factor=lambda step: 1.0,
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", precision=precision),
        hessian_interval=1,
    )


def test_fp16_hessian_pass_is_loss_scaled_then_unscaled(tmp_path, monkeypatch):
    """Issue 11.5: under fp16 the sampled-label backward goes through the GradScaler's scale (no fp16
    underflow) and update_hessian sees the true gradients; non-finite ones skip the refresh."""
    batch = (torch.randn(16, 8), torch.randint(0, 4, (16,)))
    seen = []
    monkeypatch.setattr(
        adamx.SophiaG,
        "update_hessian",
        lambda self: seen.append([p.grad.clone() for g in self.param_groups for p in g["params"]]),
    )
    trainer = _sophia_trainer(tmp_path)
    assert trainer.scaler is not None and trainer.scaler.get_scale() == 2.0**16
    torch.manual_seed(1)
    trainer._hessian_step(batch)
    torch.manual_seed(1)  # the same sampled labels, without any scaling
    with trainer.autocast():
        loss = trainer.task.sampled_loss(trainer.model, batch)
    loss.backward()
    expected = [p.grad for p in trainer.model.parameters()]
    assert len(seen) == 1
    for got, want in zip(seen[0], expected):
        torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-6)
    trainer.optimizer.zero_grad()

    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # overflows fp16 in the backward
    trainer._hessian_step(batch)
    assert len(seen) == 1 and trainer.hessian_skipped == 1
    assert all(p.grad is None for p in trainer.model.parameters())


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_switch_sets_both_backends_and_is_recorded(tmp_path, tf32):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        summary, _ = run(tmp_path, f"trainer.tf32={str(tf32).lower()}", "dataset.test_size=1437")
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert summary["tf32"] is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_checkpoint_every_min_must_be_positive_or_null():
    assert TrainerConfig().checkpoint_every_min == 30.0
    assert TrainerConfig(checkpoint_every_min=None).checkpoint_every_min is None
    with pytest.raises(ValueError, match="trainer.checkpoint_every_min"):
        TrainerConfig(checkpoint_every_min=0)


def _linear_trainer(tmp_path, batch_size, **kwargs):
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    model = torch.nn.Linear(4, 3)
    task = build_task("classification", num_classes=3)
    return Trainer(
        task=task,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_data=train_loader(data, task.collate, batch_size, seed=0),
        eval_data=[(torch.randn(4, 4), torch.randint(0, 3, (4,)))],
        lr_factor=lambda step: 1.0,
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", progress=False, epochs=2),
        **kwargs,
    )


def test_identity_is_saved_in_last_pt(tmp_path):
    """The launcher passes the run's identity; every checkpoint carries it for the resume check."""
    trainer = _linear_trainer(tmp_path, 8, identity={"optimizer.lr": 0.1, "world_size": 1})
    trainer.fit()
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["identity"] == {"optimizer.lr": 0.1, "world_size": 1}
    assert last["batch_in_epoch"] == 0 and last["step"] == 4 and last["steps_per_epoch"] == 2


def test_a_checkpoint_with_another_epoch_length_is_refused(tmp_path):
    trainer = _linear_trainer(tmp_path, 8, hooks=sigterm_at(3))
    with pytest.raises(RunInterrupted):
        trainer.fit()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["batch_in_epoch"] == 1
    with pytest.raises(ValueError, match="written with 2 steps per epoch and this run has 4.*force=true"):
        _linear_trainer(tmp_path, 4).fit()


def test_device_loader_gives_every_rank_the_same_number_of_steps(tmp_path, one_thread):
    """Issue 11 item 8: with drop_last=false and a data set that does not split evenly, ranks of the
    device-resident loader must still take equal step counts (a collective would block otherwise)."""
    from data import build_datasets
    from data.fixtures import write_fixture
    from experiments.train.loaders import DeviceEpochLoader

    bundle = build_datasets("cifar100", root=str(write_fixture("cifar100", tmp_path / "cifar")))
    size = len(bundle.train)
    world = 3
    assert size % world, "the fixture must not split evenly for this check"
    lengths = [
        len(DeviceEpochLoader(bundle.device_loader, world, False, torch.device("cpu"), 0, rank, world))
        for rank in range(world)
    ]
    assert len(set(lengths)) == 1 and lengths[0] == size // world
    single = DeviceEpochLoader(bundle.device_loader, 1, False, torch.device("cpu"), 0)
    assert len(single) == size  # one process keeps the partial batch, as GlobalBatchSampler does


def test_a_loss_scaler_state_is_dropped_where_the_run_has_no_scaler(tmp_path):
    """A checkpoint of a float16 run on a GPU carries GradScaler's state; resumed where there is no scaler
    (the CPU fallback) the weights, optimizer and counters come back and the scaler state is left aside."""
    from experiments.train.checkpoint import restore, training_state
    from tests.helpers import tiny_trainer

    torch.manual_seed(0)
    source = tiny_trainer(tmp_path / "a")
    source.step, source.epoch = 7, 1
    state = training_state(source)
    state["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
    target = tiny_trainer(tmp_path / "b")
    assert target.scaler is None
    restore(target, state)
    assert (target.step, target.epoch) == (7, 1) and target.scaler is None
    for a, b in zip(source.model.parameters(), target.model.parameters(), strict=True):
        assert torch.equal(a, b)
