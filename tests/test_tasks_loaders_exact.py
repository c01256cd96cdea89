"""Exact values the task and loader tests left as shapes or defaults: the DDP loss factor, metric names and
directions, the eval upsampling, out-of-range predictions, batch counts, sharding defaults and the pinned
seed formulas that make a resumed run replay the same augmentation stream."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from experiments import loaders
from experiments.loaders import EpochLoader, GlobalBatchSampler, ShardSampler, _positioned, train_loader
from experiments.seeding import epoch_seed, rank_seed
from experiments.segmentation.miou import ConfusionMatrix
from experiments.tasks import EvalContext, build_task
from experiments.tasks import detection as detection_task
from experiments.tasks.segmentation import SegmentationTask


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


def test_detection_loss_is_multiplied_by_the_number_of_processes(monkeypatch):
    """YOLOv7's DDP convention: the loss times world_size, so N ranks step like one with the global batch."""
    task = detection_task.DetectionTask.__new__(detection_task.DetectionTask)
    task.loss_fn = lambda model: lambda preds, targets: (preds[0].sum(), {})
    model = nn.Identity()
    batch = ([torch.tensor([2.0, 3.0])], None, None)  # the model (identity) returns one output level
    monkeypatch.setattr(detection_task, "world_size", lambda: 1)
    one = task.loss(model, batch)
    monkeypatch.setattr(detection_task, "world_size", lambda: 4)
    assert one.item() == 5.0 and task.loss(model, batch).item() == 20.0


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
    configured = yaml.safe_load(
        open(__import__("pathlib").Path(__file__).parents[1] / "configs/task/segmentation.yaml")
    )
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
