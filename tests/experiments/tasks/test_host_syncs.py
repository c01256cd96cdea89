"""Host-device syncs, counted on the CPU by ``tools.acceptance.syncs.SyncCounter`` (a dispatch mode):
the counter itself, and the bounds the tasks keep (issue 11: <= 5 per detection step, the target; 2 here)."""

import pytest
import torch

import adamx
from experiments.tasks import build_task
from models import build_model
from tools.acceptance.syncs import SyncCounter


def test_counter_sees_each_kind_of_sync_and_nothing_else():
    x = torch.randn(16)
    mask = x > 0
    cases = {
        "boolean-mask indexing": [lambda: x[mask], lambda: x.clone().__setitem__(mask, 0.0)],
        "data-dependent shape": [
            lambda: mask.nonzero(),
            lambda: torch.unique(x),
            lambda: x.masked_select(mask),
        ],
        "scalar read": [lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: torch.equal(x, x)],
        "host-to-device copy": [lambda: torch.tensor([1.0, 2.0]), lambda: x.new_tensor([3, 4])],
    }
    for reason, fns in cases.items():
        for fn in fns:
            with SyncCounter(emulate_device=True) as c:
                fn()
            assert c.by_reason() == {reason: 1}, (reason, c.by_op())
    quiet = [
        lambda: x[torch.arange(3)],
        lambda: torch.where(mask, x, 0.0),
        lambda: x.sort(),
        lambda: x.topk(3),
        lambda: x * 2 + torch.tensor(1.0),
        lambda: torch.zeros(4).index_put_((torch.arange(2),), torch.ones(2)),
    ]
    for fn in quiet:
        with SyncCounter(emulate_device=True) as c:
            fn()
        assert c.total == 0, c.by_op()


def test_without_emulation_host_only_ops_are_not_syncs():
    x = torch.randn(8)
    with SyncCounter(emulate_device=False) as c:
        x.sum().item()
        x[x > 0]
        torch.tensor([1.0, 2.0])
    assert c.total == 0


def train_step_syncs(task_name, model_name, task_kwargs, batch, optimizer="adamx"):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=task_kwargs["num_classes"])
    task = build_task(task_name, **task_kwargs)
    opt = adamx.create_optimizer(optimizer, model.parameters(), lr=1e-3)
    counts = []
    for _ in range(2):  # the second step: optimizer state exists
        with SyncCounter(emulate_device=True) as c:
            task.loss(model, batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        counts.append(c)
    return counts[-1]


@pytest.mark.parametrize("optimizer", ["adamx", "sgd"])
def test_detection_step_has_two_syncs(optimizer, one_thread):
    targets = torch.tensor([[0.0, 1, 20, 24, 18, 22], [1.0, 3, 40, 36, 30, 16], [1.0, 0, 12, 50, 8, 10]])
    batch = (torch.rand(2, 3, 64, 64), targets, [])
    c = train_step_syncs("detection", "yolov7_tiny", {"num_classes": 4, "img_size": 64}, batch, optimizer)
    # the target-class check (one bool) and the list of positives (one nonzero)
    assert c.total <= 2, [(e.op, e.reason) for e in c.events]


def test_classification_and_segmentation_steps_have_none(one_thread):
    cls = train_step_syncs(
        "classification",
        "digits_cnn",
        {"num_classes": 10},
        (torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))),
    )
    assert cls.total == 0, cls.by_op()
    masks = torch.randint(0, 4, (2, 32, 32))
    masks[0, 0] = 255
    seg = train_step_syncs(
        "segmentation", "unet", {"num_classes": 4, "img_size": 32}, (torch.rand(2, 3, 32, 32), masks)
    )
    assert seg.total == 0, seg.by_op()


def test_emulation_leaves_out_host_step_counters_but_not_other_reads_inside_a_step(one_thread):
    """torch's RAdam and adamx read their CPU ``step`` tensors every step (no sync on CUDA either): left
    out. A scalar read of anything else inside optimizer.step() is still counted."""
    w = torch.nn.Parameter(torch.randn(4))

    class Peeking(torch.optim.RAdam):
        def step(self, closure=None):
            out = super().step(closure)
            float(self.param_groups[0]["params"][0].detach().sum())  # a real device read on CUDA
            return out

    for opt, expected in ((torch.optim.RAdam([w]), 0), (adamx.AdamX([w]), 0), (Peeking([w]), 1)):
        for _ in range(2):
            w.grad = torch.ones(4)
            with SyncCounter(emulate_device=True) as c:
                opt.step()
        assert c.total == expected, (type(opt).__name__, c.by_op())
