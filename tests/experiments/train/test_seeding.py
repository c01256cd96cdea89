"""seed_everything sets every determinism flag both ways, so a reused worker process (joblib, a sweep
pool) does not carry one job's deterministic mode into the next."""

import random

import numpy as np
import pytest
import torch

from experiments.train.seeding import seed_everything


@pytest.fixture
def restore_flags():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def flags() -> tuple[bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )


def test_a_deterministic_job_leaves_no_flag_to_the_next_job_in_the_same_process(restore_flags):
    seed_everything(1, deterministic=True)
    assert flags() == (True, True, False)
    seed_everything(2, deterministic=False)
    assert flags() == (False, False, torch.cuda.is_available())


def test_deterministic_mode_overrides_whatever_was_set_before(restore_flags):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    seed_everything(0, deterministic=True)
    assert flags() == (True, True, False)


def test_the_same_seed_gives_the_same_draws(restore_flags):
    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]
