"""Which device a run drives and how it joins a process group: device choice, a GPU slot claim for
parallel sweeps (gpu_slots.py), torchrun's process group, and leaving it."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from experiments.train.collectives import DistInfo
from experiments.train.errors import UsageError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error the user can fix.

    The one place a device is chosen (a per-GPU claim for parallel sweeps would hook in here).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto."
            )
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda:") and name[5:].isdigit():
        index = int(name[5:])
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise UsageError(
                f"trainer.device={name} but {count} CUDA device(s) are visible; use cuda:0..cuda:{count - 1}, "
                "cpu or auto."
                if count
                else f"trainer.device={name} but no CUDA device is visible; use trainer.device=cpu or auto."
            )
        return torch.device("cuda", index)
    raise UsageError(f"Unknown trainer.device={name!r}; choose auto, cpu, cuda or cuda:<k>.")


DIST_TIMEOUT_MIN = 30.0  # configs/trainer/default.yaml's trainer.dist_timeout_min


def setup(device_name: str, jobs_per_gpu: int = 1, timeout_min: float = DIST_TIMEOUT_MIN) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process.

    ``auto`` outside torchrun on a CUDA box claims a free GPU slot (experiments/gpu_slots.py), so the jobs
    of a parallel sweep spread over the visible GPUs; an explicit ``cuda:k`` or torchrun's LOCAL_RANK wins.
    ``timeout_min`` (``trainer.dist_timeout_min``) is how long a collective may wait for the slowest rank
    before the job fails: it must outlast rank-0-only work such as detection scoring (pycocotools took
    527 s on VOC's test set on a loaded box; NCCL's own default is 10 minutes).
    """
    if not timeout_min > 0:
        raise UsageError(
            f"trainer.dist_timeout_min={timeout_min} must be a positive number of minutes, e.g. 30."
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    claim = None
    if device_name == "auto" and "LOCAL_RANK" not in os.environ and torch.cuda.is_available():
        from experiments.runs.gpu_slots import claim_gpu

        claim = claim_gpu(jobs_per_gpu=jobs_per_gpu)
        device = claim.device
        torch.cuda.set_device(device)
    else:
        device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_min),
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device, gpu_claim=claim)


def teardown(info: DistInfo | None = None) -> None:
    """Leave the process group (so a multirun's next job starts clean) and give back a claimed GPU."""
    if dist.is_initialized():
        dist.destroy_process_group()
    if info is not None and info.gpu_claim is not None:
        torch.cuda.empty_cache()
        info.gpu_claim.release()
