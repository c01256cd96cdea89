"""End to end on CPU: U-Net + SegmentationTask + adamx.create_optimizer memorise 8 fixture images.

For speed the images are trained at 64x64 (the fixture's originals are 64-96 px) with a base-8 U-Net
(the paper's is 320 and base 32); the score is the task's own evaluation: logits upsampled to the
original size and compared with the original masks. 150 AdamX steps reach ~96 % mIoU.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import SBDataset

import adamx
from data import build_datasets
from data.fixtures import write_fixture
from data.sbd.augment import EvalTransform
from experiments.tasks import EvalContext, build_task
from models import build_model


@pytest.mark.slow
def test_unet_overfits_eight_fixture_images(tmp_path, one_thread):
    # one_thread: small convs run faster on one thread than on two oversubscribed ones
    torch.manual_seed(0)
    root = write_fixture("sbd", tmp_path, n_train=8, n_val=1)
    size = 64
    bundle = build_datasets("sbd", root=root, img_size=size, augment=False)
    task = build_task("segmentation", num_classes=bundle.num_classes, img_size=size)
    batch = task.collate([bundle.train[i] for i in range(8)])
    model = build_model("unet", num_classes=bundle.num_classes, base=8)
    optimizer = adamx.create_optimizer("adamx", adamx.decay_param_groups(model, 0.01), lr=3e-3)
    first = None
    for _ in range(150):
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    scored = SBDataset(str(root), image_set="train", mode="segmentation", transforms=EvalTransform(size))
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(
            model,
            DataLoader(scored, batch_size=4, collate_fn=task.collate),
            EvalContext(torch.device("cpu")),
        )
    print(f"overfit: loss {first:.3f} -> {loss.item():.3f}, mIoU {metrics['miou']:.1f} %")
    assert loss.item() < 0.3 * first
    assert metrics["miou"] >= 80.0, metrics
