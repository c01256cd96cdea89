"""Classification: top-1/top-5 error (Eq. 16-17) over the whole set, sharded or not; the sampled-label loss."""

import pytest
import torch
from torch import nn

from experiments.tasks import build_task
from experiments.train.task import EvalContext, Task


class Fixed(nn.Module):
    """Returns the logits stored for each input index."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        return self.logits[idx]


def make_case(n=50, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return logits, labels


def reference(logits, labels):
    top1 = (logits.argmax(1) != labels).float().mean().item() * 100
    top5 = torch.tensor(
        [labels[i].item() not in logits[i].topk(5).indices.tolist() for i in range(len(labels))]
    )
    return top1, top5.float().mean().item() * 100


def test_is_a_task_with_lower_is_better_top1():
    task = build_task("classification", num_classes=10)
    assert isinstance(task, Task)
    assert task.primary_metric == "top1_err" and task.higher_is_better is False


def test_errors_match_definition_over_uneven_batches():
    logits, labels = make_case()
    task = build_task("classification", num_classes=10)
    idx = torch.arange(len(labels))
    loader = [(idx[i : i + 7], labels[i : i + 7]) for i in range(0, 50, 7)]  # last batch smaller
    metrics = task.evaluate(Fixed(logits), loader, EvalContext(device=torch.device("cpu")))
    top1, top5 = reference(logits, labels)
    assert metrics["top1_err"] == pytest.approx(top1) and metrics["top5_err"] == pytest.approx(top5)
    assert 0 < metrics["top5_err"] < metrics["top1_err"]
    assert metrics["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_sharded_evaluation_reduces_counts_not_means():
    # Two "ranks" with 13 and 37 samples: averaging their error rates would be wrong; summing counts is right.
    logits, labels = make_case()
    task = build_task("classification", num_classes=10)
    idx = torch.arange(50)
    shards = [[(idx[:13], labels[:13])], [(idx[13:], labels[13:])]]
    partial = []

    def collect(t):
        partial.append(t.clone())
        return t

    for shard in shards:
        task.evaluate(Fixed(logits), shard, EvalContext(device=torch.device("cpu"), all_reduce_sum=collect))
    total = partial[0] + partial[1]
    metrics = task.evaluate(
        Fixed(logits), shards[0], EvalContext(device=torch.device("cpu"), all_reduce_sum=lambda t: total)
    )
    top1, top5 = reference(logits, labels)
    assert metrics["top1_err"] == pytest.approx(top1) and metrics["top5_err"] == pytest.approx(top5)


def test_sampled_loss_draws_labels_from_the_model_softmax():
    task = build_task("classification", num_classes=4)
    torch.manual_seed(0)
    peaked = torch.full((200, 4), -30.0)
    peaked[:, 2] = 30.0  # softmax is one-hot on class 2: every sampled label is 2
    model = Fixed(peaked.clone().requires_grad_(True))
    wrong_labels = torch.zeros(200, dtype=torch.long)
    loss = task.sampled_loss(model, (torch.arange(200), wrong_labels))
    assert loss.item() < 1e-6  # CE against class 2, not against the given labels
    uniform = Fixed(torch.zeros(4000, 4, requires_grad=True))
    loss = task.sampled_loss(uniform, (torch.arange(4000), torch.zeros(4000, dtype=torch.long)))
    assert loss.item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-5)
    loss.backward()
    assert uniform.logits.grad is not None


def test_collate_and_to_device_channels_last():
    task = build_task("classification", num_classes=10)
    images, labels = task.collate([(torch.rand(3, 4, 4), 1), (torch.rand(3, 4, 4), torch.tensor(7))])
    assert images.shape == (2, 3, 4, 4) and labels.tolist() == [1, 7] and labels.dtype == torch.long
    images, _ = task.to_device((images, labels), torch.device("cpu"), channels_last=True)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert task.batch_size((images, labels)) == 2


def test_bad_label_smoothing_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        build_task("classification", num_classes=10, label_smoothing=1.0)
