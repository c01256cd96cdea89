"""trainer.device: the device a run drives, or one sentence naming the setting (issue 26 item 8)."""

import pytest
import torch

from experiments.runs import devices
from experiments.train.errors import UsageError


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that says it has two CUDA devices (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_the_last_visible_index_is_accepted(two_gpus):
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("index", [2, 3, 17])
def test_an_index_at_or_past_the_device_count_is_one_sentence(two_gpus, index):
    with pytest.raises(UsageError) as info:
        devices.resolve_device(f"cuda:{index}")
    assert str(info.value) == (
        f"trainer.device=cuda:{index} but 2 CUDA device(s) are visible; use cuda:0..cuda:1, cpu or auto."
    )


def test_without_a_gpu_any_index_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"trainer.device=cuda:0 but no CUDA device is visible"):
        devices.resolve_device("cuda:0")


@pytest.mark.parametrize("name", ["cuda:", "cuda:-1", "gpu", "cuda:1.0"])
def test_other_device_names_are_refused(name):
    with pytest.raises(UsageError, match=r"Unknown trainer.device=.*choose auto, cpu, cuda or cuda:<k>"):
        devices.resolve_device(name)
