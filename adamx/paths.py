"""Which path a param group runs (single tensor, foreach, fused), ``fused="auto"``, and what ran.

``fused="auto"`` (the configs' and the registry's default) means: torch's fused kernel where every parameter of
the group is on a device it supports (CPU, CUDA) in a dtype it supports, foreach otherwise (meta tensors, MPS,
XLA, ...); an explicit ``foreach=True``/``False`` beside it wins.
``active_path(optimizer)`` names what the optimizer's groups run now, for a run's records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FUSED_CHOICES = (None, True, False, "auto")


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """True if torch's fused AdamW kernel can step every parameter (device and dtype); False for none."""
    params = list(params)
    return bool(params) and all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params)


def check_fused(group: dict[str, Any], optimizer_name: str) -> None:
    """Raise ValueError, one sentence, for a ``fused`` value that cannot run on the group's parameters."""
    fused = group.get("fused")
    if fused not in FUSED_CHOICES:
        raise ValueError(f"Invalid fused: {fused!r}; pass True, False, None or 'auto'.")
    if fused is True and group.get("foreach"):
        raise ValueError("fused=True and foreach=True cannot both be set; choose one path.")
    if fused is True:
        for p in group.get("params", []):
            if p.device.type not in FUSED_DEVICES:
                raise ValueError(
                    f"{optimizer_name}(fused=True) runs torch's fused kernel, which has no {p.device.type} "
                    f"implementation (a parameter of shape {tuple(p.shape)} is on {p.device.type}); move the model "
                    "to CPU or CUDA first, or pass fused='auto' (fused where supported, foreach elsewhere)."
                )
            if p.dtype not in FUSED_DTYPES:
                raise ValueError(
                    f"{optimizer_name}(fused=True) runs torch's fused kernel, which has no {p.dtype} "
                    f"implementation (a parameter of shape {tuple(p.shape)}); pass fused='auto' or foreach=True."
                )


def group_path(group: dict[str, Any], params: list[torch.Tensor]) -> str:
    """'fused', 'foreach' or 'single' for an AdamX/AdaX group stepping ``params``."""
    fused, foreach = group.get("fused"), group.get("foreach")
    if fused == "auto":  # an explicit foreach wins: auto only chooses for a group that did not
        if foreach is not None:
            return "foreach" if foreach else "single"
        return "fused" if fused_supported(params) else "foreach"
    if fused:
        return "fused"
    if foreach:
        return "foreach"
    if fused is None and foreach is None:
        # As torch: foreach on CUDA, the per-tensor loop elsewhere (faster than foreach on CPU here).
        return "foreach" if all(p.is_cuda for p in params) else "single"
    return "single"


def active_path(optimizer: torch.optim.Optimizer) -> str:
    """What ``optimizer.step()`` runs, for a run's records: 'fused', 'foreach', 'single', 'compiled-capable
    capturable' groups as 'capturable+<path>', or 'mixed: a, b' when groups differ. torch's own optimizers are
    read from their flags the way torch resolves them (foreach by default on CUDA)."""
    from .adamx import AdaptiveMomentOptimizer

    paths = []
    for group in optimizer.param_groups:
        params = list(group["params"])
        if not params:
            continue
        if isinstance(optimizer, AdaptiveMomentOptimizer):
            path = group_path(group, params)
            path = f"capturable+{path}" if group.get("capturable") else path
        elif group.get("fused"):
            path = "fused"
        elif group.get("foreach") or (group.get("foreach") is None and all(p.is_cuda for p in params)):
            path = "foreach"
        else:
            path = "single"
        if path not in paths:
            paths.append(path)
    return paths[0] if len(paths) == 1 else "mixed: " + ", ".join(paths) if paths else "none"
