"""Where a process sits (DistInfo) and the cross-rank collectives training and evaluation use; each is
the identity on one process. Joining a process group is the run layer's job (experiments/runs/devices.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from experiments.train.errors import UsageError, one_line


@dataclass
class DistInfo:
    """Where this process sits: rank, world size and the device it drives."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    gpu_claim: Any = None  # the GpuClaim of a device=auto job in a parallel sweep (released by teardown)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks (a copy; the input is untouched)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_max(values: list[int], device: torch.device) -> list[int]:
    """The element-wise maximum of ``values`` over ranks (``values`` itself on one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    flags = torch.tensor(values, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [int(v) for v in flags.tolist()]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result on every rank; when it raises, every rank raises too (a UsageError
    with the same sentence, or rank 0's own exception there and a RuntimeError naming it elsewhere),
    so no rank is left waiting in a collective for one that gave up."""
    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    error: BaseException | None = None
    outcome: tuple[str, Any] = ("ok", None)
    if dist.get_rank() == 0:
        try:
            outcome = ("ok", fn())
        except UsageError as exc:
            error, outcome = exc, ("usage", str(exc))
        except Exception as exc:
            error, outcome = exc, ("error", f"{type(exc).__name__}: {one_line(exc)}")
    kind, value = broadcast_object(outcome)
    if error is not None:
        raise error
    if kind == "usage":
        raise UsageError(value)
    if kind == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
