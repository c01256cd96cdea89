"""The trainer's settings (``configs/trainer/default.yaml``), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerConfig:
    """Mirrors ``configs/trainer/default.yaml``."""

    epochs: int = 1
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    grad_clip: float | None = None
    eval_every: int = 1
    progress: Any = "auto"  # auto (a TTY on rank 0), true, false
    log_every: int = 20  # steps between host syncs of the loss (train.csv rows keep every step)
    sync_bn: bool = False
    checkpoint_every_min: float | None = (
        30.0  # mid-epoch last.pt at most this often (minutes); null: epoch ends only
    )
    tf32: bool | None = (
        False  # TF32 matmuls and cuDNN convolutions on Ampere+ GPUs (the paper's protocol is fp32);
    )
    # null: torch's defaults (matmuls off, cuDNN on), what runs made before this key used
    dist_timeout_min: float = 30.0  # how long a collective waits for the slowest rank (init_process_group)
    jobs_per_gpu: int = 1  # device=auto in a parallel sweep: runs that may share one GPU (runs/gpu_slots.py)
    tensorboard: bool = False  # event files beside the CSVs (the CSVs stay the record)
    optim_stats_every: int = 0  # optim.csv every this many steps (0: off); experiments/train/probes.py
    optim_stats_eps: float = 1e-3  # optim.csv's frac_step_below_eps threshold, in units of the LR
    full_loss_steps: list[int] = field(default_factory=list)  # steps of full_loss.csv (float64, eval mode)
    full_loss_at_eval: bool = False  # full_loss.csv at every evaluation too

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown trainer.precision={self.precision!r}; choose one of {list(PRECISIONS)}."
            )
        if self.epochs < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ValueError(
                f"trainer.epochs, eval_every and log_every must be >= 1, got "
                f"{self.epochs}, {self.eval_every}, {self.log_every}."
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"trainer.grad_clip must be positive or null, got {self.grad_clip}.")
        if self.jobs_per_gpu < 1:
            raise ValueError(f"trainer.jobs_per_gpu must be >= 1, got {self.jobs_per_gpu}.")
        if not self.dist_timeout_min > 0:
            raise ValueError(
                f"trainer.dist_timeout_min must be a positive number of minutes, got {self.dist_timeout_min}."
            )
        if self.optim_stats_every < 0 or not self.optim_stats_eps > 0:
            raise ValueError(
                f"trainer.optim_stats_every must be >= 0 (0: off) and optim_stats_eps positive, got "
                f"{self.optim_stats_every} and {self.optim_stats_eps}."
            )
        self.full_loss_steps = [int(t) for t in self.full_loss_steps or []]
        if any(t < 1 for t in self.full_loss_steps):
            raise ValueError(
                f"trainer.full_loss_steps must be optimizer steps >= 1, got {self.full_loss_steps}."
            )
        if self.checkpoint_every_min is not None and not self.checkpoint_every_min > 0:
            raise ValueError(
                f"trainer.checkpoint_every_min must be positive or null, got {self.checkpoint_every_min}."
            )

    @property
    def checkpoint_every_s(self) -> float | None:
        """``checkpoint_every_min`` in seconds (the unit the trainer's clock reads)."""
        return None if self.checkpoint_every_min is None else 60.0 * self.checkpoint_every_min
