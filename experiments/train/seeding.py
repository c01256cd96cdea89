"""Seeds and random-number-generator states, kept as tensors so checkpoints load with weights_only."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices) and set all three determinism flags either way:
    deterministic mode forbids nondeterministic kernels (cuDNN deterministic, no benchmark); otherwise
    they are allowed again (cuDNN benchmark on CUDA), so a deterministic job does not leak its flags into
    the next job of a reused worker process (joblib, a sweep launcher's pool)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = torch.cuda.is_available()
        torch.backends.cudnn.deterministic = False


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's data order and worker seeds, so an epoch replays the same after a resume."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63


def rank_seed(seed: int, rank: int) -> int:
    """The seed of DDP rank ``rank``'s own random streams (dropout, augmentation): rank 0 keeps ``seed``,
    the others get distinct ones, so no two ranks draw the same masks for their shares of a batch."""
    return seed if rank == 0 else (seed * 6_364_136_223 + rank * 1_442_695_041 + 1) % 2**63


def seed_rank_streams(seed: int, rank: int) -> None:
    """Reseed python, numpy and torch (all devices) for rank ``rank``'s own streams (see ``rank_seed``)."""
    derived = rank_seed(seed, rank)
    random.seed(derived)
    np.random.seed(derived % 2**32)
    torch.manual_seed(derived)


def worker_init_fn(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from the seed torch gave it (itself from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """Every global RNG state, as tensors and primitives only."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", state["numpy"].cpu().numpy().astype(np.uint32), state["numpy_pos"], has_gauss, cached)
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
