"""The edges torch.optim users touch: add_param_group validation, float64 on the fused path, schedules by
name through torch.save/torch.load(weights_only=True), checkpoints of adamx 0.1.0, registry vs configs."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import adamx
from adamx import schedules as S
from tests.helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parent / "checkpoints"


def _w() -> list[torch.Tensor]:
    return [torch.zeros(2, requires_grad=True)]


# ---- one validation for the constructor and add_param_group -------------------------------------------

BAD = [
    (adamx.AdamX, dict(lr=-1.0), "lr: -1.0"),
    (adamx.AdamX, dict(betas=(1.5, 0.99)), "betas\\[0\\]: 1.5"),
    (adamx.AdamX, dict(betas=(0.9, 1.0)), "1.0"),
    (adamx.AdamX, dict(eps=float("nan")), "eps: nan"),
    (adamx.AdamX, dict(weight_decay=-0.1), "-0.1"),
    (adamx.AdamX, dict(foreach=True, fused=True), "fused=True and foreach=True"),
    (adamx.AdamX, dict(beta2_schedule="bogus"), "'bogus'"),
    (adamx.AdamX, dict(beta2_schedule="adax", betas=(0.9, 1.5)), "1.5"),
    (adamx.AdamX, dict(beta2_schedule=lambda t: 0.99), "register_beta2_schedule"),
    (adamx.AdamX, dict(capturable="yes"), "'yes'"),
    (adamx.AdaX, dict(lr=-1.0), "lr: -1.0"),
    (adamx.AdaX, dict(betas=(0.9, 1.0)), "betas\\[1\\]: 1.0"),
    (adamx.AdaX, dict(betas=(0.9, 0.0)), "betas\\[1\\]: 0.0"),
    (adamx.AdaX, dict(eps=float("nan")), "eps: nan"),
    (adamx.AdaX, dict(foreach=True, fused=True), "fused=True and foreach=True"),
    (adamx.Lion, dict(lr=-1.0), "lr: -1.0"),
    (adamx.Lion, dict(betas=(1.5, 0.99)), "betas\\[0\\]: 1.5"),
    (adamx.Lion, dict(weight_decay=float("nan")), "weight_decay: nan"),
    (adamx.SophiaG, dict(lr=-1.0), "lr: -1.0"),
    (adamx.SophiaG, dict(betas=(0.965, 1.5)), "1.5"),
    (adamx.SophiaG, dict(rho=-0.04), "-0.04"),
]


@pytest.mark.parametrize(
    "ctor,kwargs,bad",
    BAD,
    ids=[f"{c.__name__}-{k}".replace(repr(k.get("beta2_schedule")), "<lambda>") for c, k, _ in BAD],
)
def test_add_param_group_rejects_what_the_constructor_rejects(ctor, kwargs, bad) -> None:
    with pytest.raises(ValueError, match=bad):
        ctor(_w(), **kwargs)
    opt = ctor(_w())
    with pytest.raises(ValueError, match=bad):
        opt.add_param_group({"params": _w(), **kwargs})
    assert len(opt.param_groups) == 1  # the bad group was not kept


def test_add_param_group_fills_and_normalises_like_the_constructor() -> None:
    opt = adamx.AdamX(_w(), lr=2e-3, beta2_schedule="adam", betas=[0.9, 0.999])
    opt.add_param_group({"params": _w(), "betas": [0.8, 0.99]})
    assert opt.param_groups[1]["betas"] == (0.8, 0.99) and opt.param_groups[1]["lr"] == 2e-3
    assert opt.param_groups[1]["beta2_schedule"] == "adam" and opt.param_groups[1]["capturable"] is False


@pytest.mark.parametrize("ctor", [adamx.AdamX, adamx.AdaX])
def test_integer_parameters_get_one_sentence(ctor) -> None:
    ints = torch.arange(4)
    with pytest.raises(ValueError, match="floating-point parameters only; got a torch.int64 parameter"):
        ctor([ints])
    opt = ctor(_w())
    with pytest.raises(ValueError, match="torch.int64"):
        opt.add_param_group({"params": [ints]})


def test_adam_adax_schedule_rejects_beta2_of_one_or_more() -> None:
    with pytest.raises(ValueError, match="0 < beta2 < 1"):
        adamx.create_optimizer("adam+adax", _w(), betas=(0.9, 1.0))


# ---- fused float64 ---------------------------------------------------------------------------------------


def _run_dtypes(dtypes, steps: int, **kw) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(17, generator=g).to(dt).requires_grad_() for dt in dtypes]
    opt = adamx.AdamX([{"params": params, "weight_decay": 0.05}], lr=1e-2, **kw)
    for t in range(steps):
        gen = torch.Generator().manual_seed(1000 + t)
        for p in params:
            p.grad = torch.randn(17, generator=gen, dtype=torch.float64).to(p.dtype)
        opt.step()
    return [p.detach() for p in params]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_fused_float64_equals_single_tensor_float64() -> None:
    """The CPU kernel keeps beta exact in float64: no float32 correction may be applied there."""
    fused = _run_dtypes([torch.float64], 2000, fused=True)
    single = _run_dtypes([torch.float64], 2000, foreach=False)
    assert _rel(fused[0], single[0]) < 1e-12


def test_fused_mixed_dtype_group() -> None:
    """float32 and float64 parameters in one group: each dtype gets its own kernel probe and scales."""
    fused = _run_dtypes([torch.float64, torch.float32, torch.float64], 500, fused=True)
    single = _run_dtypes([torch.float64, torch.float32, torch.float64], 500, foreach=False)
    assert _rel(fused[0], single[0]) < 1e-12 and _rel(fused[2], single[2]) < 1e-12
    assert _rel(fused[1], single[1]) < 1e-5  # float32: rounding of a 500-step run


# ---- schedules by name ---------------------------------------------------------------------------------


def _adam_copy(t, beta2):
    return (
        S.beta2_hat_adam(t, beta2) if not torch.is_tensor(t) else 1.0 - S.one_minus_beta2_hat_adam(t, beta2)
    )


def _slow_linear(t, beta2):
    """beta2_hat_t = 1 - 1/(1 + (t - 1) beta2): written with operators only, so it also takes tensors."""
    return 1.0 - 1.0 / (1.0 + (t - 1.0) * beta2)


def _train(opt, params, start: int, steps: int) -> None:
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_registered_schedule_is_used_and_survives_weights_only_load(monkeypatch) -> None:
    # registrations are global: give this test its own copies of the registries so no later test sees them
    monkeypatch.setattr(S, "BETA2_SCHEDULES", dict(S.BETA2_SCHEDULES))
    monkeypatch.setattr(S, "ONE_MINUS_BETA2_SCHEDULES", dict(S.ONE_MINUS_BETA2_SCHEDULES))
    adamx.register_beta2_schedule("test-adam-copy", _adam_copy, one_minus=S.one_minus_beta2_hat_adam)
    adamx.register_beta2_schedule("test-slow-linear", _slow_linear)
    # the registered function is what runs: a copy of Adam's schedule gives Adam's numbers bit for bit
    ref, copy_ = [torch.ones(5, requires_grad=True)], [torch.ones(5, requires_grad=True)]
    _train(adamx.AdamX(ref, betas=(0.9, 0.999), beta2_schedule="adam"), ref, 0, 20)
    _train(adamx.AdamX(copy_, betas=(0.9, 0.999), beta2_schedule="test-adam-copy"), copy_, 0, 20)
    assert torch.equal(ref[0], copy_[0])

    def make(params):
        return adamx.AdamX(params, betas=(0.9, 0.05), beta2_schedule="test-slow-linear")

    straight = [torch.ones(5, requires_grad=True)]
    opt = make(straight)
    _train(opt, straight, 0, 30)
    assert S.BETA2_SCHEDULES["test-slow-linear"](30, 0.05) != S.beta2_hat_adam(30, 0.05)

    resumed = [torch.ones(5, requires_grad=True)]
    opt = make(resumed)
    _train(opt, resumed, 0, 10)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["param_groups"][0]["beta2_schedule"] == "test-slow-linear"
    opt = make(resumed)
    opt.load_state_dict(saved)
    _train(opt, resumed, 10, 20)
    assert torch.equal(resumed[0], straight[0])

    compiled = [torch.ones(5, requires_grad=True)]  # the same function on tensors (compiled / capturable)
    _train(
        adamx.AdamX(compiled, betas=(0.9, 0.05), beta2_schedule="test-slow-linear", capturable=True),
        compiled,
        0,
        30,
    )
    torch.testing.assert_close(compiled[0], straight[0], rtol=1e-6, atol=0)


def test_unregistered_or_builtin_names() -> None:
    opt = adamx.AdamX(_w())
    state = opt.state_dict()
    state["param_groups"][0]["beta2_schedule"] = "never-registered"
    with pytest.raises(ValueError, match="'never-registered'.*register_beta2_schedule"):
        adamx.AdamX(_w()).load_state_dict(state)
    with pytest.raises(ValueError, match="built in"):
        adamx.register_beta2_schedule("adamx", _slow_linear)


def test_state_dict_without_schedule_loads_and_steps() -> None:
    """State dicts of older versions or of other tools may lack beta2_schedule: the optimizer's default fills it."""
    straight = [torch.ones(5, requires_grad=True)]
    _train(adamx.create_optimizer("adam", straight), straight, 0, 20)
    resumed = [torch.ones(5, requires_grad=True)]
    opt = adamx.create_optimizer("adam", resumed)
    _train(opt, resumed, 0, 10)
    state = copy.deepcopy(opt.state_dict())
    for group in state["param_groups"]:
        del group["beta2_schedule"], group["capturable"]
    opt = adamx.create_optimizer("adam", resumed)
    opt.load_state_dict(state)
    assert opt.param_groups[0]["beta2_schedule"] == "adam"
    _train(opt, resumed, 10, 10)
    assert torch.equal(resumed[0], straight[0])


# ---- checkpoints written by adamx 0.1.0 -----------------------------------------------------------------

OLD_CASES = {
    "adamx-single": lambda p: adamx.AdamX(p, foreach=False),
    "adamx-fused": lambda p: adamx.AdamX(p, fused=True),
    "adamx-foreach-adafactor": lambda p: adamx.AdamX(
        p, foreach=True, beta2_schedule="adafactor", betas=(0.9, 0.8)
    ),
    "adax-fused": lambda p: adamx.AdaX(p, fused=True),
    "adax-single": lambda p: adamx.AdaX(p, foreach=False),
}


@pytest.mark.parametrize("name", sorted(OLD_CASES))
@pytest.mark.parametrize("capturable", [False, True], ids=["as-saved", "capturable"])
def test_checkpoint_of_adamx_0_1_0_loads_and_steps(name: str, capturable: bool) -> None:
    """tests/adamx/checkpoints/adamx_0_1_0_states.pt (see make_adamx_0_1_0_states.py): int steps, fused moment scales; the
    loaded optimizer takes the same 5 steps as 0.1.0 did (bit for bit on the saved path)."""
    old = torch.load(DATA / "adamx_0_1_0_states.pt", weights_only=True)
    case = old["cases"][name]
    assert isinstance(case["optimizer"]["state"][0]["step"], int)
    params = [p.clone().requires_grad_() for p in case["params"]]
    opt = OLD_CASES[name]([{"params": [params[0]], "weight_decay": 0.05}, {"params": [params[1]]}])
    opt.load_state_dict(copy.deepcopy(case["optimizer"]))
    for group in opt.param_groups:
        group["capturable"] = capturable
    for t in range(5, 10):
        for p, g in zip(params, old["grads"][t]):
            p.grad = g.clone()
        opt.step()
    for p, expected in zip(params, case["params_after"]):
        if capturable:
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(p.detach(), expected)
    assert all(torch.is_tensor(st["step"]) and int(st["step"]) == 10 for st in opt.state.values())


# ---- registry defaults = configs/optimizer/*.yaml --------------------------------------------------------

CONFIGS = ROOT / "configs" / "optimizer"
NOT_CONSTRUCTOR_KEYS = {"name", "hessian_update_interval"}


@pytest.mark.parametrize("config", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_registry_defaults_equal_the_config(config: str) -> None:
    """create_optimizer(name, params) with no hyperparameters is the optimizer the config describes."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{config}.yaml"))
    group = adamx.create_optimizer(cfg["name"], _w()).param_groups[0]
    for key, value in cfg.items():
        if key in NOT_CONSTRUCTOR_KEYS:
            continue
        got = group[key]
        expected = tuple(value) if isinstance(value, list) else value
        assert got == expected or (expected is None and got in (None, False)), f"{config}: {key}"


def test_registry_radam_is_the_configs_decoupled_radam() -> None:
    """Same update after N steps as torch's RAdam built from configs/optimizer/radam.yaml."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "radam.yaml"))
    cfg.pop("name")
    cfg["betas"] = tuple(cfg["betas"])
    assert cfg["decoupled_weight_decay"] is True
    ours, theirs = [torch.ones(6, requires_grad=True)], [torch.ones(6, requires_grad=True)]
    _train(adamx.create_optimizer("radam", ours), ours, 0, 30)
    _train(torch.optim.RAdam(theirs, **cfg), theirs, 0, 30)
    assert torch.equal(ours[0], theirs[0])
    coupled = [torch.ones(6, requires_grad=True)]
    _train(torch.optim.RAdam(coupled, **{**cfg, "decoupled_weight_decay": False}), coupled, 0, 30)
    assert not math.isclose(coupled[0][0].item(), ours[0][0].item(), rel_tol=1e-7)
