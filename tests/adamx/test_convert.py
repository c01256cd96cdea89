"""Bring your checkpoint (issue 17): conversions checked against the source libraries' own optimizers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from lion_pytorch import Lion as LionPytorch

import adamx
from adamx import schedules as S

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(6, 5), (11,), (2, 3, 4)]
GROUPS = [dict(lr=1e-3, weight_decay=0.05), dict(lr=3e-3, weight_decay=0.0)]


def _grads(t: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(900 + t)
    scale = 1.0 + 0.5 * math.sin(t / 9.0)
    return [torch.randn(s, generator=g) * scale for s in SHAPES]


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def _groups(params: list[torch.Tensor]) -> list[dict]:
    return [{"params": params[:2], **GROUPS[0]}, {"params": params[2:], **GROUPS[1]}]


def _train(opt, params, start: int, steps: int) -> None:
    for t in range(start + 1, start + steps + 1):
        for p, g in zip(params, _grads(t)):
            p.grad = g.clone()
        opt.step()


def _continue_both(source_opt, source_params, build_target, converted, start: int, steps: int):
    """Continue the source optimizer, and a target optimizer loaded with ``converted`` on copies of the
    parameters, over the same gradients; returns both parameter lists."""
    target_params = [p.detach().clone().requires_grad_() for p in source_params]
    target = build_target(_groups(target_params))
    target.load_state_dict(converted)
    _train(source_opt, source_params, start, steps)
    _train(target, target_params, start, steps)
    return source_params, target_params, target


# ---- lion-pytorch -> Lion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("convert", [True, False], ids=["converted", "loaded-as-is"])
def test_lion_pytorch_state_continues_bit_for_bit(convert: bool, foreach: bool) -> None:
    """lion-pytorch's state_dict (lr, betas, weight_decay only) into adamx.Lion, converted or loaded as is:
    the continuation equals lion-pytorch's own, bit for bit."""
    params = _params()
    source = LionPytorch(_groups(params), betas=(0.9, 0.99), weight_decay=0.1)
    _train(source, params, 0, 15)
    saved = source.state_dict()
    assert set(saved["param_groups"][0]) == {"lr", "betas", "weight_decay", "params"}
    loaded = adamx.convert_state_dict(saved, "lion-pytorch", "lion") if convert else copy.deepcopy(saved)
    ours, theirs, target = _continue_both(
        source, params, lambda g: adamx.Lion(g, lr=0.5, foreach=foreach), loaded, 15, 25
    )
    assert target.param_groups[0]["foreach"] is foreach and target.param_groups[1]["lr"] == 3e-3
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_lion_pytorch_decoupled_weight_decay_needs_its_init_lr() -> None:
    """lion-pytorch(decoupled_weight_decay=True) uses wd / init_lr, which its state_dict does not record."""
    params = _params()
    source = LionPytorch(_groups(params), lr=2e-3, decoupled_weight_decay=True)
    _train(source, params, 0, 10)
    saved = source.state_dict()
    converted = adamx.convert_state_dict(saved, "lion-pytorch", "lion", decoupled_init_lr=2e-3)
    naive = adamx.convert_state_dict(saved, "lion-pytorch", "lion")
    ours, theirs, _ = _continue_both(source, params, adamx.Lion, converted, 10, 20)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert naive["param_groups"][0]["weight_decay"] == 0.05  # the group's own value wins in lion-pytorch too
    assert converted["param_groups"][0]["weight_decay"] == 0.05 / 2e-3


# ---- torch.optim.AdamW <-> adam ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["single", "fused"])
def test_adamw_state_continues_as_adam(path: str) -> None:
    """torch AdamW -> adamx "adam" (the same optimizer): v / (1 - beta2^t), m and t as they are; continuing
    matches AdamW's continuation to float32 rounding (torch rounds its decay factor 1 - lr wd to float32)."""
    params = _params()
    source = torch.optim.AdamW(_groups(params), betas=(0.9, 0.999), eps=1e-8, foreach=False)
    _train(source, params, 0, 40)
    saved = copy.deepcopy(source.state_dict())
    converted = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adam")
    st = converted["state"][0]
    assert st["step"] == 40 and torch.equal(st["exp_avg"], saved["state"][0]["exp_avg"])
    torch.testing.assert_close(
        st["exp_avg_sq"].double(),
        saved["state"][0]["exp_avg_sq"].double() / (1 - 0.999**40),
        rtol=1e-7,
        atol=0,
    )
    ours, theirs, target = _continue_both(
        source,
        params,
        lambda g: adamx.create_optimizer("adam", g, foreach=False, fused=path == "fused"),
        converted,
        40,
        60,
    )
    assert target.param_groups[0]["beta2_schedule"] == "adam" and target.param_groups[0]["fused"] is (
        path == "fused"
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["single", "fused", "fused-step-tensor"])
def test_adam_state_continues_as_torch_adamw(path: str) -> None:
    """adamx "adam" -> torch AdamW (through the canonical export, fused path included; ``step`` as an int or
    a 0-d tensor): continuing in torch matches continuing in adamx; AdamW -> adam -> AdamW gives back
    AdamW's state."""
    params = _params()
    source = adamx.create_optimizer("adam", _groups(params), foreach=False, fused=path.startswith("fused"))
    _train(source, params, 0, 40)
    saved = copy.deepcopy(source.state_dict())
    if path == "fused-step-tensor":
        for st in saved["state"].values():
            st["step"] = torch.tensor(float(st["step"]))
    converted = adamx.convert_state_dict(saved, "adam", "torch.optim.AdamW")
    assert converted["state"][0]["step"].dtype == torch.float32
    ours, theirs, target = _continue_both(
        source, params, lambda g: torch.optim.AdamW(g, foreach=False), converted, 40, 60
    )
    assert target.param_groups[0]["betas"] == (0.9, 0.999)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)

    back = adamx.convert_state_dict(
        adamx.convert_state_dict(target.state_dict(), "torch.optim.AdamW", "adam"),
        "adam",
        "torch.optim.AdamW",
    )
    for pid, st in target.state_dict()["state"].items():
        assert torch.equal(back["state"][pid]["step"], st["step"])
        assert torch.equal(back["state"][pid]["exp_avg"], st["exp_avg"])
        torch.testing.assert_close(back["state"][pid]["exp_avg_sq"], st["exp_avg_sq"], rtol=3e-7, atol=0)


# ---- torch.optim.AdamW -> AdamX ----------------------------------------------------------------------------


def _adamx_reference(i: int, p0, m_hat, v, t0: int, steps: int, lr: float, wd: float, beta2: float):
    """Algorithm 1 in float64 from (theta, m_t, v_t, t0), theta rounded to float32 where the code rounds it."""
    p, m, v = p0.double(), m_hat.double(), v.double()
    for t in range(t0 + 1, t0 + steps + 1):
        g = _grads(t)[i].double()
        b1, c2 = S.beta1_hat(t, 0.9), S.one_minus_beta2_hat_adamx(t, beta2)
        m = b1 * m + (1 - b1) * g
        v = (1 - c2) * v + c2 * g * g
        p = (p * (1 - lr * wd)).float().double()
        p = (p - lr * m / (v.sqrt() + 1e-8)).float().double()
    return p


def test_adamw_state_into_adamx_carries_m_and_v_then_follows_adamx() -> None:
    """AdamW -> AdamX: t, m (AdamX's m_t = exp_avg / (1 - beta1^t) is AdamW's bias-corrected m) and AdamW's
    bias-corrected v (as AdamX's v_t) carry over; from step t + 1 on v follows AdamX's beta2_hat_t with
    AdamX's beta2 (default 0.99): the continuation equals Algorithm 1 started from (m_t, v_t, t)."""
    t0, steps = 50, 40
    params = _params()
    source = torch.optim.AdamW(_groups(params), betas=(0.9, 0.999), foreach=False)
    _train(source, params, 0, t0)
    saved = copy.deepcopy(source.state_dict())
    start = [p.detach().clone() for p in params]
    converted = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")
    assert converted["param_groups"][0]["betas"] == (0.9, 0.99)
    assert converted["param_groups"][0]["beta2_schedule"] == "adamx"
    ours, theirs, target = _continue_both(source, params, adamx.AdamX, converted, t0, steps)
    for i, p in enumerate(theirs):
        adamw = saved["state"][i]
        m_hat = adamw["exp_avg"].double() / (1 - 0.9**t0)
        v_hat = adamw["exp_avg_sq"].double() / (1 - 0.999**t0)
        group = GROUPS[0 if i < 2 else 1]
        ref = _adamx_reference(i, start[i], m_hat, v_hat, t0, steps, group["lr"], group["weight_decay"], 0.99)
        ulp = torch.finfo(torch.float32).eps * ref.abs().max()
        assert ((p.detach().double() - ref).abs() / ulp).max() < 2  # measured 0.39
        # v now weights the last 40 gradients by AdamX's beta2_hat_t, not AdamW's 0.999 (measured: up to 0.9%)
        v_adamw = source.state[ours[i]]["exp_avg_sq"].double() / (1 - 0.999 ** (t0 + steps))
        v_adamx = target.state[p]["exp_avg_sq"].double()
        assert ((v_adamx - v_adamw).abs() / v_adamw).max() > 2e-3
    assert target.state[theirs[0]]["step"] == t0 + steps


# ---- errors --------------------------------------------------------------------------------------------------


def _adamw_state(**kwargs) -> dict:
    params = _params()
    opt = torch.optim.AdamW(_groups(params), foreach=False, **kwargs)
    _train(opt, params, 0, 2)
    return opt.state_dict()


@pytest.mark.parametrize(
    "make,source,target,options,match",
    [
        (lambda: _adamw_state(amsgrad=True), "torch.optim.AdamW", "adam", {}, "amsgrad=True"),
        (lambda: _adamw_state(maximize=True), "torch.optim.AdamW", "adamx", {}, "maximize=True"),
        (lambda: _adamw_state(), "torch.optim.Adam", "adam", {}, "No conversion from 'torch.optim.Adam'"),
        (lambda: _adamw_state(), "torch.optim.AdamW", "adam", {"beta2": 0.9}, "Unknown option.*beta2"),
        (
            lambda: adamx.AdamX([torch.zeros(2, requires_grad=True)]).state_dict(),
            "adam",
            "torch.optim.AdamW",
            {},
            "beta2_schedule='adamx'",
        ),
        (
            lambda: {
                "state": {},
                "param_groups": [
                    dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, cautious_factor=0.0, params=[0])
                ],
            },  # fmt: skip
            "lion-pytorch",
            "lion",
            {},
            "cautious_factor",
        ),
    ],
    ids=["amsgrad", "maximize", "unknown-pair", "unknown-option", "adamx-to-adamw", "unknown-lion-key"],
)
def test_conversions_refuse_what_they_cannot_carry(make, source, target, options, match) -> None:
    with pytest.raises(ValueError, match=match):
        adamx.convert_state_dict(make(), source, target, **options)


def test_torch_adam_with_l2_penalty_is_refused() -> None:
    params = _params()
    opt = torch.optim.Adam(_groups(params), foreach=False)
    _train(opt, params, 0, 2)
    with pytest.raises(ValueError, match="L2 penalty"):
        adamx.convert_state_dict(opt.state_dict(), "torch.optim.AdamW", "adam")


def test_torch_adam_without_weight_decay_converts_like_adamw() -> None:
    """torch.optim.Adam with weight_decay=0 in every group adds no L2 term: it is AdamW with no decay, so it
    converts (only a nonzero L2 penalty is refused)."""
    params = _params()
    opt = torch.optim.Adam([{"params": params, "lr": 1e-3, "weight_decay": 0.0}], foreach=False)
    _train(opt, params, 0, 3)
    saved = opt.state_dict()
    assert saved["param_groups"][0]["decoupled_weight_decay"] is False
    converted = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adam")
    for pid, st in saved["state"].items():
        expected = (st["exp_avg_sq"].double() / (1 - 0.999**3)).float()
        assert torch.equal(converted["state"][pid]["exp_avg_sq"], expected)


def test_an_adamw_group_saved_without_the_decoupled_weight_decay_key_converts() -> None:
    """torch's AdamW state_dicts from before ``decoupled_weight_decay`` existed lack the key: AdamW decays the
    weights, so a missing key with weight_decay != 0 is AdamW's decay, not Adam's L2 penalty."""
    saved = _adamw_state()
    for group in saved["param_groups"]:
        del group["decoupled_weight_decay"]
    assert saved["param_groups"][0]["weight_decay"] == 0.05
    converted = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")
    assert [g["weight_decay"] for g in converted["param_groups"]] == [0.05, 0.0]


def test_beta2_zero_round_trips_with_v_unchanged() -> None:
    """beta2 = 0 (v is the last squared gradient; 1 - 0^t = 1): both directions keep v as it is, where
    log1p(beta2 - 1) would be log(0)."""
    params = _params()
    source = torch.optim.AdamW(_groups(params), betas=(0.9, 0.0), foreach=False)
    _train(source, params, 0, 3)
    saved = source.state_dict()
    to_adam = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adam")
    back = adamx.convert_state_dict(to_adam, "adam", "torch.optim.AdamW")
    for pid, st in saved["state"].items():
        assert torch.equal(to_adam["state"][pid]["exp_avg_sq"], st["exp_avg_sq"])
        assert torch.equal(back["state"][pid]["exp_avg_sq"], st["exp_avg_sq"])
