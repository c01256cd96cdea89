"""``fused: auto`` (issue 23, item 7): the configs' default runs torch's fused kernel where the device and the
optimizer support it and foreach elsewhere; ``adamx.active_path`` names what runs, for the run's records;
``fused=True`` where the kernel cannot run is a sentence, not ``NotImplementedError (aten::equal)``."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import adamx
from experiments.runs.build import build_optimizer, resolve_fused
from experiments.train.errors import UsageError
from tests.adamx.test_validation import CONFIGS

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(device: str = "cpu") -> torch.nn.Module:
    with torch.device(device):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


@pytest.mark.parametrize("config", ["adam", "adamx", "adam_adafactor", "adam_adax", "adam_adamx", "adax"])
def test_adam_family_configs_run_fused_on_cpu_and_foreach_on_meta(config) -> None:
    cfg = OmegaConf.load(CONFIGS / f"{config}.yaml")
    assert cfg.fused == "auto"
    assert adamx.active_path(build_optimizer(_model(), cfg)) == "fused"
    assert adamx.active_path(build_optimizer(_model("meta"), cfg)) == "foreach"


def test_resolve_fused_for_every_kind_of_optimizer() -> None:
    cpu, meta = list(_model().parameters()), list(_model("meta").parameters())
    assert resolve_fused("adamx", {"fused": "auto"}, cpu) == {"fused": True}
    assert resolve_fused("adamx", {"fused": "auto"}, meta) == {"fused": False, "foreach": True}
    assert resolve_fused("adamx", {"fused": "auto", "foreach": False}, cpu) == {
        "fused": False,
        "foreach": False,
    }
    assert resolve_fused("adamx", {"fused": None}, cpu) == {"fused": None}  # null keeps torch's default
    assert resolve_fused("lion", {"fused": "auto"}, cpu) == {"foreach": True}  # no fused path: foreach
    assert resolve_fused("sophiag", {"fused": "auto", "foreach": False}, cpu) == {"foreach": False}
    assert resolve_fused("radam", {"fused": "auto"}, cpu) == {"foreach": True}
    with pytest.raises(UsageError, match="optimizer.fused=True, but optimizer 'lion' has no fused path"):
        resolve_fused("lion", {"fused": True}, cpu)


@pytest.mark.parametrize("cls", [adamx.AdamX, adamx.AdaX], ids=["adamx", "adax"])
def test_fused_auto_in_the_class_is_the_fused_path_where_supported(cls) -> None:
    """fused='auto' as a constructor value (the registry's default): the same numbers as fused=True on CPU."""
    runs = []
    for fused in ("auto", True):
        model = _model()
        opt = cls(model.parameters(), fused=fused)
        for i in range(5):
            torch.manual_seed(i)
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
        assert adamx.active_path(opt) == "fused"
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert adamx.active_path(cls(_model("meta").parameters(), fused="auto")) == "foreach"
    assert adamx.active_path(cls(_model().parameters(), fused="auto", foreach=False)) == "single"


def test_active_path_names_mixed_capturable_and_torch_optimizers() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = adamx.AdamX([{"params": [a], "fused": True}, {"params": [b], "foreach": False, "capturable": True}])
    assert adamx.active_path(opt) == "mixed: fused, capturable+single"
    assert adamx.active_path(torch.optim.SGD([a], lr=0.1)) == "single"
    assert adamx.active_path(torch.optim.SGD([a], lr=0.1, fused=True)) == "fused"


@pytest.mark.parametrize("cls", [adamx.AdamX, adamx.AdaX], ids=["adamx", "adax"])
def test_fused_true_on_meta_tensors_is_a_sentence(cls) -> None:
    params = list(_model("meta").parameters())
    with pytest.raises(ValueError, match=r"fused=True\) runs torch's fused kernel, which has no meta"):
        cls(params, fused=True)
    with pytest.raises(ValueError, match="Invalid fused: 'yes'"):
        cls(list(_model().parameters()), fused="yes")
