"""devices.setup passes trainer.dist_timeout_min to init_process_group (NCCL's own default, 10 minutes,
is shorter than detection's rank-0 scoring can take), with the yaml's value as its default."""

import datetime

import pytest
import torch.distributed as dist
import yaml

from experiments.runs import devices
from experiments.train.errors import UsageError
from tests.helpers import ROOT


@pytest.fixture
def torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    return calls


def test_the_timeout_reaches_init_process_group(torchrun_env):
    info = devices.setup("cpu", timeout_min=45)
    ((args, kwargs),) = torchrun_env
    assert kwargs["timeout"] == datetime.timedelta(minutes=45)
    assert kwargs["backend"] == "gloo" and info.world_size == 2 and info.rank == 1


def test_the_default_is_the_yamls_and_outlasts_coco_scoring(torchrun_env):
    configured = yaml.safe_load((ROOT / "configs" / "trainer" / "default.yaml").read_text())
    devices.setup("cpu")
    ((_, kwargs),) = torchrun_env
    assert kwargs["timeout"] == datetime.timedelta(minutes=configured["dist_timeout_min"])
    assert kwargs["timeout"].total_seconds() > 2 * 527  # pycocotools on VOC's test set, loaded box


@pytest.mark.parametrize("bad", [0, -5])
def test_a_timeout_that_is_not_positive_is_named(torchrun_env, bad):
    with pytest.raises(UsageError, match=rf"trainer.dist_timeout_min={bad} must be a positive"):
        devices.setup("cpu", timeout_min=bad)
