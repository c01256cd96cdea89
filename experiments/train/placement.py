"""Where the model lives and what wraps it: its device and memory format, SyncBatchNorm, DDP, torch.compile;
and the TF32 switches it computes under."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from experiments.train.collectives import DistInfo
from experiments.train.config import TrainerConfig


def place_model(
    model: nn.Module, cfg: TrainerConfig, dist: DistInfo
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(the model on its device, what trains it: DDP and/or compiled, what evaluates it: compiled or not)."""
    model.to(dist.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model: nn.Module = model
    if dist.enabled:
        train_model = DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    if cfg.compile:
        return model, torch.compile(train_model), torch.compile(model)
    return model, train_model, model


def apply_tf32(tf32: bool | None) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions: both on or both off, or (None) torch's defaults,
    matmuls off and cuDNN on, set explicitly since an earlier run in this process may have changed them."""
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = True if tf32 is None else tf32
