"""The device-resident CIFAR loader against a DataLoader, and DDP against one process."""

from __future__ import annotations

import tempfile
import time

import torch
from torch.utils.data import DataLoader

from tools.acceptance.runner import Context, Row, grade
from tools.acceptance.training import count_syncs


def check_cifar_loader(ctx: Context) -> list[Row]:
    """Device-resident CIFAR-100 (uint8 on the device, augmented there) vs a DataLoader with workers:
    img/s and host syncs per batch; target: >= 10x the fastest classification model's Trainer img/s."""
    from data import build_datasets
    from data.fixtures import write_fixture
    from experiments.tasks.classification import ClassificationTask

    n_train, batch = (256, 64) if ctx.tiny else (20_000, 64)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fixture("cifar100", tmp, n_train=n_train, n_test=64)
        bundle = build_datasets("cifar100", root=str(root))
        if bundle.device_loader is None:
            return [Row("data.cifar_device_loader", "FAIL", note="cifar100 bundle has no device_loader")]
        gen = torch.Generator(device=ctx.device).manual_seed(0)
        loader = bundle.device_loader("train", batch, True, True, ctx.device, gen)
        next(iter(loader))  # data upload and first-batch set-up
        ctx.sync()
        start = time.perf_counter()
        with count_syncs(ctx) as syncs:
            images = 0
            for x, _ in loader:
                images += x.shape[0]
        ctx.sync()
        device_img_s = images / (time.perf_counter() - start)
        batches = max(1, images // batch)

        task = ClassificationTask(num_classes=100)
        workers = 0 if ctx.tiny else 8
        dl = DataLoader(
            bundle.train,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            collate_fn=task.collate,
            pin_memory=ctx.cuda,
        )
        limit = 4 if ctx.tiny else 100
        start, images = time.perf_counter(), 0
        for i, b in enumerate(dl):
            x, _ = task.to_device(b, ctx.device)
            images += x.shape[0]
            if i + 1 >= limit:
                break
        ctx.sync()
        dataloader_img_s = images / (time.perf_counter() - start)
    numbers = {
        "device_img_s": device_img_s,
        "dataloader_img_s": dataloader_img_s,
        "syncs_per_batch": syncs[0] / batches,
        "workers": workers,
    }
    model_img_s = max((ctx.shared.get("model_img_s") or {}).values(), default=None)
    if model_img_s is None:
        return [Row("data.cifar_device_loader", "INFO", numbers, "no model throughput measured to compare")]
    numbers["vs_model"] = device_img_s / model_img_s
    status = grade(numbers["vs_model"], 10.0, 3.0) if ctx.cuda else "INFO"
    return [Row("data.cifar_device_loader", status, numbers, "target vs_model >= 10 (never the bottleneck)")]


def check_ddp(ctx: Context) -> list[Row]:
    """2 processes on one global batch: detection gradient / one process's gradient = 1.0. gloo (both
    ranks on this device), and NCCL when there are >= 2 GPUs."""
    from tools.acceptance.ddp import detection_gradient_ratio

    rows = []
    backends = [("gloo", ctx.device.type)]
    if ctx.cuda:
        backends.append(("nccl", "cuda"))
    for backend, device_type in backends:
        name = f"ddp.{backend}.detection_grad_ratio"
        if backend == "nccl" and torch.cuda.device_count() < 2:
            rows.append(Row(name, "SKIP", note=f"NCCL needs >= 2 GPUs, found {torch.cuda.device_count()}"))
            continue
        r = detection_gradient_ratio(backend, device_type, world=2)
        ok = abs(r["ratio"] - 1) < 1e-3 and r["cosine"] > 1 - 1e-5
        rows.append(
            Row(name, "PASS" if ok else "FAIL", r, "target ratio 1.0 (0.5 before the world_size factor)")
        )
    return rows
