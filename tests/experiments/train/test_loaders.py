"""Epoch-to-epoch data order through the real loaders (experiments/train/loaders.py) and the trainer: each
epoch is the permutation its (seed, epoch) names, a mid-epoch resume gives exactly the remaining indices,
drop_last and DDP sharding cut exactly the batches they should.

Exact values the task and loader tests left as shapes or defaults: the DDP loss factor, metric names and
directions, the eval upsampling, out-of-range predictions, batch counts, sharding defaults and the pinned
seed formulas that make a resumed run replay the same augmentation stream."""

from __future__ import annotations

import os
import signal

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from experiments.tasks import EvalContext, build_task
from experiments.tasks.detection import task as detection_task
from experiments.tasks.segmentation.miou import ConfusionMatrix
from experiments.tasks.segmentation.task import SegmentationTask
from experiments.train import loaders
from experiments.train.loaders import (
    EpochLoader,
    GlobalBatchSampler,
    ShardSampler,
    _positioned,
    eval_loader,
    train_loader,
)
from experiments.train.seeding import epoch_seed, rank_seed
from experiments.train.trainer import Hooks, RunInterrupted, Trainer, TrainerConfig
from tests.helpers import ROOT

# ---------------------------------------------------------------- from test_loader_epochs.py: Epoch-to-epoch data order through the real loaders (experiments/train/loaders.py


def expected_order(seed: int, epoch: int, n: int) -> list[int]:
    """The documented rule (experiments/train/seeding.py): randperm under seed*1_000_003 + epoch*7_919 + 12_345."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63)
    return torch.randperm(n, generator=gen).tolist()


def indexed(n: int) -> torch.utils.data.TensorDataset:
    """Sample i is (i, i % 3): a batch's first column reads back which samples it holds."""
    return torch.utils.data.TensorDataset(torch.arange(n).float()[:, None], torch.arange(n) % 3)


def batches(loader) -> list[list[int]]:
    return [x[:, 0].long().tolist() for x, _ in loader]


def test_each_epoch_is_the_permutation_its_seed_and_epoch_name():
    """Catches a sampler that ignores set_epoch (same order every epoch) or seeds from the wrong epoch."""
    loader = train_loader(indexed(20), torch.utils.data.default_collate, 5, seed=7)
    seen = []
    for epoch in range(3):
        got = batches(loader.epoch(epoch))
        assert got == [expected_order(7, epoch, 20)[i : i + 5] for i in range(0, 20, 5)]
        seen.append(sum(got, []))
    assert seen[0] != seen[1] != seen[2] and seen[0] != seen[2]
    assert all(sorted(s) == list(range(20)) for s in seen)  # each a permutation: no repeats, none lost
    other = train_loader(indexed(20), torch.utils.data.default_collate, 5, seed=8)
    assert sum(batches(other.epoch(0)), []) == expected_order(8, 0, 20) != seen[0]


@pytest.mark.parametrize(
    "n, batch, drop_last, sizes",
    [
        (20, 6, True, [6, 6, 6]),  # 20 = 3 * 6 + 2: the 2 left over are dropped
        (20, 6, False, [6, 6, 6, 2]),
        (18, 6, True, [6, 6, 6]),  # divides exactly: nothing to drop, no empty batch
        (18, 6, False, [6, 6, 6]),
        (5, 6, False, [5]),
        (5, 6, True, []),
    ],
)
def test_drop_last_counts_are_exact(n, batch, drop_last, sizes):
    """Catches drop_last inverted, a partial batch counted in len() but not yielded (or the reverse)."""
    loader = train_loader(indexed(n), torch.utils.data.default_collate, batch, seed=1, drop_last=drop_last)
    assert len(loader) == len(sizes)
    got = batches(loader.epoch(2))
    assert [len(b) for b in got] == sizes
    assert sum(got, []) == expected_order(1, 2, n)[: sum(sizes)]
    assert len(loader.sampler) == sum(sizes)


@pytest.mark.parametrize("drop_last, n", [(True, 20), (False, 20), (True, 18)])
@pytest.mark.parametrize("start", [1, 2, 3])
def test_mid_epoch_start_gives_exactly_the_remaining_indices(drop_last, n, start):
    """Catches a resume that restarts the epoch, skips one batch too many or too few, or reshuffles."""
    loader = train_loader(indexed(n), torch.utils.data.default_collate, 6, seed=4, drop_last=drop_last)
    full = sum(batches(loader.epoch(1)), [])
    rest = sum(batches(loader.epoch(1, start=start)), [])
    assert rest == full[6 * start :]
    assert rest == expected_order(4, 1, n)[6 * start : len(full)]
    assert len(loader.sampler) == len(full) - 6 * start
    assert len(loader) == len(full) // 6 + (len(full) % 6 > 0)  # the epoch's length stays whole
    assert sum(batches(loader.epoch(1)), []) == full  # the next epoch() call starts at batch 0 again


@pytest.mark.parametrize(
    "world, n, drop_last", [(2, 21, False), (2, 16, True), (4, 37, True), (4, 37, False)]
)
def test_ddp_ranks_split_each_global_batch_disjointly_and_completely(world, n, drop_last):
    """Catches rank slices that overlap, interleave wrongly, or keep a partial global batch on one rank."""
    global_batch = 8
    order = expected_order(3, 1, n)
    kept = n // global_batch * global_batch  # under DDP the partial global batch is always dropped
    per_rank = []
    for rank in range(world):
        loader = train_loader(
            indexed(n), torch.utils.data.default_collate, global_batch, 3, 0, drop_last, rank, world
        )
        got = batches(loader.epoch(1))
        local = global_batch // world
        assert len(loader) == n // global_batch
        for b, batch in enumerate(got):  # global batch b, this rank's slice of it
            assert batch == order[b * global_batch + rank * local : b * global_batch + (rank + 1) * local]
        per_rank.append(sum(got, []))
        resumed = sum(batches(loader.epoch(1, start=1)), [])
        assert resumed == per_rank[-1][local:]  # a resume skips the same global batch on every rank
    merged = sum(per_rank, [])
    assert len(merged) == len(set(merged)) == kept
    assert sorted(merged) == sorted(order[:kept])


def test_eval_shards_are_every_worldth_sample_once():
    """Catches evaluation shards that overlap or drop the tail (each sample once across ranks)."""
    shards = [
        batches(eval_loader(indexed(10), torch.utils.data.default_collate, 2, 0, r, 3)) for r in range(3)
    ]
    assert shards == [[[0, 3], [6, 9]], [[1, 4], [7]], [[2, 5], [8]]]
    assert batches(eval_loader(indexed(5), torch.utils.data.default_collate, 2)) == [[0, 1], [2, 3], [4]]


def test_worker_generator_is_reseeded_per_epoch_and_rank():
    """Catches worker seeds drawn from one stream for every epoch (or shared by the ranks)."""
    seeds = set()
    for rank in (0, 1):
        loader = train_loader(indexed(16), torch.utils.data.default_collate, 8, 5, rank=rank, world_size=2)
        for epoch in (0, 1):
            loader.epoch(epoch)
            first = loader.generator.initial_seed()
            loader.epoch(epoch)
            assert loader.generator.initial_seed() == first  # replayed on resume
            seeds.add(first)
    assert len(seeds) == 4


class RecordingTask:
    """Classification on the indexed data set, recording which samples each training step saw."""

    def __init__(self):
        self.inner = build_task("classification", num_classes=3)
        self.seen: list[list[int]] = []
        for name in ("name", "primary_metric", "higher_is_better", "collate", "to_device", "batch_size"):
            setattr(self, name, getattr(self.inner, name))
        self.sampled_loss = None

    def loss(self, model, batch):
        self.seen.append(batch[0][:, 0].long().tolist())
        return self.inner.loss(model, (batch[0] / 20, batch[1]))

    def evaluate(self, model, loader, ctx):
        return self.inner.evaluate(model, loader, ctx)


def _trainer(tmp_path, task, hooks=None):
    model = torch.nn.Linear(1, 3)
    return Trainer(
        task=task,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        train_data=train_loader(indexed(20), task.collate, 6, seed=11),  # 3 steps per epoch, 2 dropped
        eval_data=[(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))],
        lr_factor=lambda step: 1.0,
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", progress=False, epochs=3, log_every=1),
        hooks=hooks,
    )


def _epoch_batches(epoch: int) -> list[list[int]]:
    order = expected_order(11, epoch, 20)
    return [order[i : i + 6] for i in range(0, 18, 6)]


def test_trainer_sees_each_epochs_own_order(tmp_path):
    """Catches the trainer asking the loader for the wrong epoch (1-based, or the same one every time)."""
    task = RecordingTask()
    _trainer(tmp_path, task).fit()
    assert task.seen == _epoch_batches(0) + _epoch_batches(1) + _epoch_batches(2)


@pytest.mark.parametrize("stop_at", [2, 3, 4])
def test_trainer_resume_replays_exactly_the_remaining_batches(tmp_path, stop_at):
    """Catches a mid-epoch resume that restarts the epoch or skips to the wrong batch (and an epoch-end
    stop, step 3, that replays or skips a whole epoch)."""
    first = RecordingTask()
    stop = Hooks(on_step_end=lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == stop_at else None)
    with pytest.raises(RunInterrupted):
        _trainer(tmp_path, first, hooks=stop).fit()
    second = RecordingTask()
    _trainer(tmp_path, second).fit()
    every = _epoch_batches(0) + _epoch_batches(1) + _epoch_batches(2)
    assert first.seen == every[:stop_at]
    assert second.seen == every[stop_at:]


# ------------------------------------------------------------------ the device-resident (CIFAR) loader


def device_bundle(n: int):
    """A tiny device-resident CIFAR whose labels are the sample indices."""
    import numpy as np

    from data.cifar.device import DeviceResidentCifar

    images = np.zeros((n, 2, 2, 3), dtype=np.uint8)
    return DeviceResidentCifar({"train": (images, list(range(n))), "eval": (images[:2], [0, 1])})


def device_order(seed: int, epoch: int, n: int) -> list[int]:
    """DeviceEpochLoader's rule: one permutation from the generator seeded with epoch_seed + 1."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63 + 1)
    return torch.randperm(n, generator=gen).tolist()


def device_batches(loader) -> list[list[int]]:
    return [labels.tolist() for _, labels in loader]


@pytest.mark.parametrize("drop_last, sizes", [(True, [6, 6, 6]), (False, [6, 6, 6, 2])])
def test_device_loader_epochs_follow_the_seed_and_resume_mid_epoch(drop_last, sizes):
    """Catches a device loader that reuses one order for every epoch or restarts a resumed epoch."""
    from experiments.train.loaders import DeviceEpochLoader

    loader = DeviceEpochLoader(device_bundle(20), 6, drop_last, torch.device("cpu"), seed=2)
    assert len(loader) == len(sizes)
    epochs = []
    for epoch in (0, 1):
        got = device_batches(loader.epoch(epoch))
        assert [len(b) for b in got] == sizes
        assert sum(got, []) == device_order(2, epoch, 20)[: sum(sizes)]
        epochs.append(got)
    assert epochs[0] != epochs[1]
    assert device_batches(loader.epoch(1, start=2)) == epochs[1][2:]


def test_device_loader_ddp_ranks_take_disjoint_strides_of_one_permutation():
    """Catches ranks drawing different permutations (overlapping samples) or one rank's stride shifted."""
    from experiments.train.loaders import DeviceEpochLoader

    order = device_order(2, 1, 21)[:20]  # 21 = 2 * 10 + 1: the odd sample out is dropped
    seen = []
    for rank in (0, 1):
        loader = DeviceEpochLoader(device_bundle(21), 6, False, torch.device("cpu"), 2, rank, 2)
        got = device_batches(loader.epoch(1))
        assert got == [order[rank::2][i : i + 3] for i in range(0, 9, 3)]  # 10 per rank: 3 batches of 3
        seen += sum(got, [])
    assert len(seen) == len(set(seen)) == 18


# ---------------------------------------------------------------- from test_tasks_loaders_exact.py: Exact values the task and loader tests left as shapes or defaults: the DDP loss


@pytest.mark.parametrize(
    "size, drop_last, expected", [(10, False, 3), (10, True, 2), (8, False, 2), (3, False, 1)]
)
def test_global_batch_count(size, drop_last, expected):
    """A trailing partial batch counts once (never twice), and not at all with drop_last."""
    assert GlobalBatchSampler(size, 4, seed=0, drop_last=drop_last).num_batches() == expected


def test_shard_sampler_defaults_to_one_process():
    assert list(ShardSampler(5)) == [0, 1, 2, 3, 4] and list(ShardSampler(5, 1, 2)) == [1, 3]


def test_an_epoch_loader_without_a_loader_has_no_steps():
    loader = EpochLoader(None, None, torch.Generator(), seed=0)
    assert loader.steps == 0 and len(loader) == 0


@pytest.mark.parametrize("rank", [0, 1])
def test_worker_seeds_follow_the_pinned_formula(rank):
    """epoch e of seed s seeds the worker stream with rank_seed(epoch_seed(s, e) + 1, rank): pinned, so a
    run resumed under a later version draws the same augmentations."""
    data = torch.utils.data.TensorDataset(torch.arange(8.0))
    loader = train_loader(data, None, 4, seed=3, rank=rank, world_size=2)
    for epoch in (0, 2):
        loader.epoch(epoch)
        assert loader.generator.initial_seed() == rank_seed(epoch_seed(3, epoch) + 1, rank)


class _Batches:
    """A minimal device loader: a permutation of 10 samples in batches of 4 (3 batches)."""

    batch_size = 4

    def _indices(self) -> torch.Tensor:
        return torch.arange(10)

    def __len__(self) -> int:
        return 3


@pytest.mark.parametrize("start, expected", [(0, 3), (1, 2), (3, 0), (5, 0)])
def test_a_resumed_device_epoch_has_the_remaining_batches(start, expected):
    """Starting at batch k leaves len - k batches, and none (not one) when k reaches the end."""
    loader = _positioned(_Batches(), start, (lambda: None) if start == 0 else None)
    assert len(loader) == expected
    assert loader._indices().tolist() == list(range(10))[start * 4 :]


def test_device_loader_per_rank_augmentation_seed_is_pinned(monkeypatch):
    """Under DDP each rank's augmentation stream after the permutation is rank_seed(epoch_seed + 1, rank)."""
    seen = []

    def make(split, batch_size, shuffle, drop_last, device, generator, **shard):
        seen.append(shard)
        return _Batches()

    loader = loaders.DeviceEpochLoader(
        make, batch_size=4, drop_last=False, seed=5, world_size=2, rank=1, device="cpu"
    )
    positioned = loader.epoch(2)
    positioned._indices()  # draws the permutation, then sets the per-rank stream
    assert loader.generator.initial_seed() == rank_seed(epoch_seed(5, 2) + 1, 1)
    assert seen[-1] == {"num_replicas": 2, "rank": 1}


def test_detection_gradient_is_multiplied_by_the_number_of_processes(monkeypatch):
    """YOLOv7's DDP convention: the gradient times world_size, so N ranks step like one with the global batch;
    the loss value (what train.csv logs) stays the single-process one (issue 24)."""
    task = detection_task.DetectionTask.__new__(detection_task.DetectionTask)
    task.loss_fn = lambda model: lambda preds, targets: (preds[0].sum(), {})
    model = nn.Identity()
    level = torch.tensor([2.0, 3.0], requires_grad=True)
    batch = ([level], None, None)  # the model (identity) returns one output level
    monkeypatch.setattr(detection_task, "world_size", lambda: 1)
    one = task.loss(model, batch)
    one.backward()
    single_grad = level.grad.clone()
    level.grad = None
    monkeypatch.setattr(detection_task, "world_size", lambda: 4)
    four = task.loss(model, batch)
    four.backward()
    assert one.item() == 5.0 and four.item() == 5.0
    assert torch.equal(single_grad, torch.ones(2)) and torch.equal(level.grad, 4 * torch.ones(2))


def test_classification_metric_names_follow_topk():
    ctx = EvalContext(device=torch.device("cpu"), rank=0, broadcast_object=lambda obj: obj)
    batch = [(torch.eye(6), torch.arange(6))]
    for k in (1, 3, 5, 6):
        task = build_task("classification", num_classes=6, topk=k)
        assert set(task.evaluate(nn.Identity(), batch, ctx)) == {"top1_err", f"top{k}_err", "loss"}


def test_classification_batches_stay_in_the_default_layout_unless_asked():
    task = build_task("classification", num_classes=3)
    images, _ = task.to_device(
        (torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)), torch.device("cpu")
    )
    assert images.is_contiguous() and not images.is_contiguous(memory_format=torch.channels_last)
    images, _ = task.to_device(
        (torch.randn(2, 3, 4, 4), torch.zeros(2)), torch.device("cpu"), channels_last=True
    )
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_segmentation_defaults_are_voc_and_the_config():
    """21 classes (VOC: 20 + background), dice_weight = the config's 0.5; every metric is higher-better."""
    configured = yaml.safe_load(open(ROOT / "configs/task/segmentation.yaml"))
    task = SegmentationTask()
    assert task.num_classes == 21 and task.dice_weight == configured["dice_weight"] == 0.5
    assert task.ignore_index == configured["ignore_index"] == 255
    assert len(task.metric_directions) == 2 + 21 and all(task.metric_directions.values())


def test_segmentation_eval_upsamples_logits_without_aligned_corners():
    """Logits at 2x2 scored against a 4x4 mask: bilinear with align_corners=False, like torch's default."""
    task = SegmentationTask(num_classes=2, img_size=2)
    logits = torch.tensor(
        [[[[0.0, 1.0], [0.0, 1.0]], [[0.43, 0.0], [0.43, 0.0]]]]
    )  # boundary at x = 0.3 of a pixel
    mask = torch.tensor([[[1, 1, 0, 0]] * 4])
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False).argmax(1)
    corners = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=True).argmax(1)
    assert not torch.equal(up, corners)  # the case tells the two apart
    ctx = EvalContext(device=torch.device("cpu"), rank=0, broadcast_object=lambda obj: obj)

    class Fixed(nn.Module):
        def forward(self, images):
            return logits

    expected = pytest.approx(100.0 * (up == mask).float().mean().item())
    assert task.evaluate(Fixed(), [(torch.zeros(1, 3, 2, 2), mask)], ctx)["pixel_acc"] == expected
    # masks of different sizes come as a list and are upsampled one by one: the same rule
    assert task.evaluate(Fixed(), [(torch.zeros(1, 3, 2, 2), [mask[0]])], ctx)["pixel_acc"] == expected


@pytest.mark.parametrize("pred_value", [2, 3, -1])
def test_a_prediction_outside_the_classes_is_counted_as_bad(pred_value):
    """num_classes = 2: a prediction of 2 (one past the end), 3 or -1 on a labelled pixel is bad, counted
    exactly; on an ignored pixel it is not."""
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([pred_value, pred_value, 1, 0]), torch.tensor([0, 255, 1, 1]))
    assert cm.bad.item() == 1
    assert cm.mat.tolist() == [[0, 0], [1, 1]]
    with pytest.raises(ValueError):
        cm.reduce(lambda t: t)


def test_sharded_length_counts_the_batches_left_after_a_resume():
    """Two processes, 10 samples, global batch 4 (drop_last forced): 2 batches of 2 per rank. A resume at
    batch 1 leaves 1 batch (2 indices) per rank, one past the end leaves none; set_epoch without a start
    begins the next epoch at its first batch again."""
    s = GlobalBatchSampler(10, 4, seed=0, rank=1, world_size=2)
    assert len(s) == 4 and len(list(s)) == 4
    s.set_epoch(0, 1)
    assert len(s) == 2 and len(list(s)) == 2
    s.set_epoch(0, 3)
    assert len(s) == 0 and list(s) == []
    s.set_epoch(1)
    assert len(s) == 4 and len(list(s)) == 4
    one = GlobalBatchSampler(10, 4, seed=0, drop_last=False)
    one.set_epoch(0, 2)
    one.set_epoch(1)
    assert len(one) == 10 and sorted(one) == list(range(10))
