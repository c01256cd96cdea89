"""DDP against one process: the detection gradient of N processes on one global batch must equal the
gradient of one process on all of it (ratio 1.0; YOLOv7 scales its loss by world_size for this)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

NUM_CLASSES, SIZE = 4, 64


def half_batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images with three boxes: every rank's share of the global batch (identical shares, so that
    per-rank BatchNorm statistics and per-rank loss means equal the global ones)."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE, generator=g)
    targets = torch.tensor([[0.0, 1, 20, 24, 18, 22], [1.0, 3, 40, 36, 30, 16], [1.0, 0, 12, 50, 8, 10]])
    return images.to(device), targets.to(device)


def global_batch(device: torch.device, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = half_batch(device)
    shifted = [targets + torch.tensor([2.0 * r, 0, 0, 0, 0, 0], device=device) for r in range(world)]
    return images.repeat(world, 1, 1, 1), torch.cat(shifted)


def detection_grad(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One detection loss backward; the flat gradient of the (unwrapped) model's parameters, on the CPU."""
    from experiments.tasks.detection.task import DetectionTask, unwrap

    task = DetectionTask(num_classes=NUM_CLASSES, img_size=SIZE)
    task.loss(model, (images, targets, [])).backward()
    return torch.cat([p.grad.reshape(-1) for p in unwrap(model).parameters()]).detach().double().cpu()


def _model(device: torch.device) -> torch.nn.Module:
    from models.yolov7_tiny import YOLOv7Tiny

    torch.manual_seed(0)
    return YOLOv7Tiny(num_classes=NUM_CLASSES).to(device)


def _device(device_type: str, rank: int) -> torch.device:
    if device_type == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _worker(rank: int, world: int, init_file: str, out: str, backend: str, device_type: str) -> None:
    torch.set_num_threads(1)
    device = _device(device_type, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(_model(device), device_ids=ids)
        grad = detection_grad(model, *half_batch(device))
        if rank == 0:
            torch.save(grad, out)
    finally:
        dist.destroy_process_group()


def detection_gradient_ratio(backend: str = "gloo", device_type: str = "cpu", world: int = 2) -> dict:
    """Spawn ``world`` processes; return |g_ddp| / |g_one|, their cosine and the largest relative gap."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "grad.pt")
        init = str(Path(tmp) / "init")
        mp.spawn(_worker, args=(world, init, out, backend, device_type), nprocs=world, join=True)
        ddp = torch.load(out, weights_only=True)
    device = _device(device_type, 0)
    one = detection_grad(_model(device), *global_batch(device, world))
    gap = (ddp - one).abs().max() / one.abs().max()
    return {
        "ratio": float(ddp.norm() / one.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(ddp, one, dim=0)),
        "max_rel_gap": float(gap),
    }
