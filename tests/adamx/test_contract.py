"""torch.optim's contract for every adamx optimizer: resume, closure, skipped params, errors, AMP, dtypes.

Contract details the numeric tests cannot see: which path a flag selects, the exact sentence a bad
schedule gets, the normalised defaults, and the conversion of an AdamW state saved by an older torch.

Edges of the optimizer internals with exact expected values: one-element tensor hyperparameters, the
fused path's v-scale bookkeeping when beta2_hat_t = 1, and which exported moment wins on load."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import adamx
from adamx import _adaptive
from adamx import lion as lion_module
from adamx.state import internal_state

# ---------------------------------------------------------------- from test_optim_contract.py: torch.optim's contract for every adamx optimizer: resume, closure, skipped param


# (name, constructor kwargs) covering every class and path
CASES = [
    ("adamx-single", lambda p: adamx.AdamX(p, foreach=False)),
    ("adamx-foreach", lambda p: adamx.AdamX(p, foreach=True)),
    ("adamx-fused", lambda p: adamx.AdamX(p, fused=True)),
    ("adax-fused", lambda p: adamx.AdaX(p, fused=True)),
    ("adax-single", lambda p: adamx.AdaX(p, foreach=False)),
    ("lion", lambda p: adamx.Lion(p, weight_decay=0.1)),
    ("lion-single", lambda p: adamx.Lion(p, weight_decay=0.1, foreach=False)),
    ("sophiag", lambda p: adamx.SophiaG(p, bs=8)),
    ("sophiag-single", lambda p: adamx.SophiaG(p, bs=8, foreach=False)),
]
IDS = [c[0] for c in CASES]
BUILDERS = [c[1] for c in CASES]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    )


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)


def _train(model, opt, steps, start=0):
    for i in range(start, start + steps):
        x, y = _batch(i)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if isinstance(opt, adamx.SophiaG) and i % 5 == 4:
            adamx.gnb_hessian_update(opt, lambda x=x: adamx.sampled_cross_entropy(model(x)))


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_state_dict_resume_is_bit_exact(build) -> None:
    torch.manual_seed(1)  # sampled labels of SophiaG's Hessian refresh
    model = _model()
    opt = build(adamx.decay_param_groups(model, 0.05))
    _train(model, opt, 100)
    expected = [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(1)
    model2 = _model()
    opt2 = build(adamx.decay_param_groups(model2, 0.05))
    _train(model2, opt2, 50)
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(), "rng": torch.get_rng_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model3 = _model()
    model3.load_state_dict(saved["model"])
    opt3 = build(adamx.decay_param_groups(model3, 0.05))
    opt3.load_state_dict(saved["opt"])
    torch.set_rng_state(saved["rng"])
    _train(model3, opt3, 50, start=50)
    for p, e in zip(model3.parameters(), expected):
        assert torch.equal(p, e)


def test_state_moves_between_paths() -> None:
    """Save on the fused path, continue on single/foreach (and back): the same trajectory to float32 rounding."""
    runs = {}
    for first, second in [
        ("fused", "fused"),
        ("fused", "single"),
        ("single", "fused"),
        ("foreach", "foreach"),
    ]:
        model = _model()
        opt = adamx.AdamX(model.parameters(), foreach=first == "foreach", fused=first == "fused")
        _train(model, opt, 30)
        state = opt.state_dict()
        opt2 = adamx.AdamX(model.parameters(), foreach=second == "foreach", fused=second == "fused")
        opt2.load_state_dict(state)
        for group in opt2.param_groups:  # the saved groups carry the first path's flags, as in torch
            group["foreach"], group["fused"] = second == "foreach", second == "fused"
        _train(model, opt2, 30, start=30)
        runs[(first, second)] = [p.detach().clone() for p in model.parameters()]
    base = runs[("fused", "fused")]
    for key, params in runs.items():
        for p, b in zip(params, base):
            torch.testing.assert_close(p, b, rtol=1e-5, atol=1e-6, msg=f"{key}")


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_closure_and_params_without_grad(build) -> None:
    w = torch.randn(3, 3, requires_grad=True)
    frozen = torch.randn(3, requires_grad=True)  # never gets a grad
    before = frozen.detach().clone()
    opt = build([w, frozen])
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [1] and torch.is_tensor(loss) and loss.item() > 0
    assert torch.equal(frozen, before) and frozen not in opt.state
    assert w in opt.state


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_sparse_gradients_raise(build) -> None:
    emb = nn.Embedding(5, 2, sparse=True)
    opt = build(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize(
    "ctor,kwargs,bad",
    [
        (adamx.AdamX, dict(lr=-1.0), "-1.0"),
        (adamx.AdamX, dict(betas=(1.0, 0.99)), "betas\\[0\\]: 1.0"),
        (adamx.AdamX, dict(betas=(0.9, 1.5)), "1.5"),
        (adamx.AdamX, dict(eps=-1e-8), "-1e-08"),
        (adamx.AdamX, dict(weight_decay=-0.1), "-0.1"),
        (adamx.AdamX, dict(beta2_schedule="nope"), "nope"),
        (adamx.AdamX, dict(foreach=True, fused=True), "fused=True"),
        (adamx.AdaX, dict(betas=(0.9, 0.0)), "0.0"),
        (adamx.Lion, dict(betas=(0.9, 1.2)), "1.2"),
        (adamx.SophiaG, dict(rho=-1.0), "-1.0"),
        (adamx.SophiaG, dict(bs=0), "bs: 0"),
    ],
)
def test_invalid_hyperparameters_name_the_value(ctor, kwargs, bad) -> None:
    with pytest.raises(ValueError, match=bad):
        ctor([torch.zeros(2, requires_grad=True)], **kwargs)


def test_registry_names_and_errors() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    expected = {
        "adamx",
        "adam",
        "adax",
        "sgd",
        "radam",
        "lion",
        "sophiag",
        "adam+adafactor",
        "adam+adax",
        "adam+adamx",
    }
    assert set(adamx.OPTIMIZERS) == expected
    assert adamx.create_optimizer("adam", p).param_groups[0]["betas"] == (0.9, 0.999)
    assert adamx.create_optimizer("adam+adax", p).param_groups[0]["beta2_schedule"] == "adax"
    assert adamx.create_optimizer("adamx", p, betas=[0.9, 0.99]).param_groups[0]["betas"] == (0.9, 0.99)
    assert adamx.create_optimizer("sgd", p).param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="adamw.*valid names: adamx, adam"):
        adamx.create_optimizer("adamw", p)
    with pytest.raises(ValueError, match="rho"):
        adamx.create_optimizer("adamx", p, rho=0.1)


def test_decay_param_groups_follow_the_authors_rule() -> None:
    model = _model()
    groups = adamx.decay_param_groups(model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert len(groups[1]["params"]) == 3  # bn weight and bias, linear bias
    opt = adamx.create_optimizer("adamx", groups, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # per-group values win


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_grad_scaler(build) -> None:
    model = _model()
    opt = build(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = _batch(0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # an inf gradient makes the scaler skip the step
    after = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
    scaler.step(opt)
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), after))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_low_precision_params_keep_float32_moments(build, dtype) -> None:
    w32 = torch.randn(16, 8)
    w = w32.to(dtype).requires_grad_()
    opt = build([w])
    for i in range(3):
        w.grad = torch.randn(16, 8, generator=torch.Generator().manual_seed(i)).to(dtype)
        opt.step()
    assert w.dtype == dtype and torch.isfinite(w.float()).all() and not torch.equal(w.detach(), w32.to(dtype))
    for key, value in opt.state[w].items():
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            assert value.dtype == torch.float32, key
    loaded = build([w])
    loaded.load_state_dict(opt.state_dict())
    for key, value in loaded.state[w].items():
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            assert value.dtype == torch.float32 and torch.equal(value, opt.state[w][key]), key


def test_low_precision_matches_float32_path_closely() -> None:
    """bf16 params: the step runs in float32 and rounds once into bf16, so it tracks a float32 run."""
    w32 = torch.randn(64, requires_grad=True)
    wbf = w32.detach().to(torch.bfloat16).float().requires_grad_()
    wlow = wbf.detach().to(torch.bfloat16).requires_grad_()
    o32, olow = adamx.AdamX([wbf], lr=1e-2), adamx.AdamX([wlow], lr=1e-2)
    for i in range(20):
        g = torch.randn(64, generator=torch.Generator().manual_seed(i))
        wbf.grad, wlow.grad = g.clone(), g.to(torch.bfloat16)
        o32.step()
        olow.step()
    torch.testing.assert_close(wlow.float(), wbf.detach(), rtol=2e-2, atol=2e-2)


def test_sophiag_batch_size_factor() -> None:
    """ratio = |m| / (rho * bs * h): step(bs=...) overrides the group value for that call."""
    w = torch.ones(1, requires_grad=True)
    opt = adamx.SophiaG([w], lr=1.0, betas=(0.0, 0.0), rho=0.5, weight_decay=0.0, bs=4)
    w.grad = torch.tensor([1.0])
    opt.update_hessian()  # h = 1
    w.grad = torch.tensor([0.5])
    opt.step()  # ratio = 0.5 / (0.5 * 4 * 1) = 0.25
    assert torch.allclose(w.detach(), torch.tensor([0.75]))
    opt.step(bs=100)  # ratio = 0.5 / 50 = 0.01
    assert torch.allclose(w.detach(), torch.tensor([0.74]))


# ---------------------------------------------------------------- from test_optim_contract_exact.py: Contract details the numeric tests cannot see: which path a flag selects, the ex


@pytest.mark.parametrize("foreach, expect_foreach", [(None, True), (True, True), (False, False)])
def test_lion_foreach_flag_selects_the_path(monkeypatch, foreach, expect_foreach):
    """foreach=False must take the per-tensor loop, None/True the foreach kernel (same numbers, other cost)."""
    calls = []
    real = lion_module._foreach_lion
    monkeypatch.setattr(lion_module, "_foreach_lion", lambda *a: (calls.append(1), real(*a)))
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, -2.0, 0.0])
    adamx.Lion([p], lr=0.5, betas=(0.5, 0.25), weight_decay=1.0, foreach=foreach).step()
    assert bool(calls) is expect_foreach
    # the hand value: decay 1 - 0.5*1 = 0.5, update sign(0.5*0 + 0.5*g) = sign(g), step -0.5
    assert p.detach().tolist() == [0.5 - 0.5, 0.5 + 0.5, 0.5]


@pytest.mark.parametrize("bad", ["bogus", "ADAMX", 3])
def test_an_unknown_schedule_gets_the_sentence_naming_it(bad):
    """Constructor and add_param_group both name the unknown value and the way out."""
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=rf"Unknown beta2_schedule {bad!r}; choose one of \['adafactor', "):
        adamx.AdamX([p], beta2_schedule=bad)
    opt = adamx.AdamX([p])
    with pytest.raises(ValueError, match=rf"Unknown beta2_schedule {bad!r}; .*register_beta2_schedule"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "beta2_schedule": bad})


def test_defaults_hold_betas_as_a_float_tuple():
    """betas given as a list (as a YAML config gives them) are stored as a tuple of floats in defaults too."""
    p = torch.nn.Parameter(torch.ones(2))
    opt = adamx.AdamX([p], betas=[0, 0.5])
    assert opt.defaults["betas"] == (0.0, 0.5) and isinstance(opt.defaults["betas"], tuple)
    assert all(type(b) is float for b in opt.defaults["betas"])
    assert opt.param_groups[0]["betas"] == (0.0, 0.5)


def _old_adamw_state(weight_decay: float) -> dict:
    """An AdamW state_dict as torch < 2.6 wrote it: no decoupled_weight_decay key in the group."""
    group = dict(lr=0.1, betas=(0.5, 0.75), eps=1e-3, weight_decay=weight_decay, amsgrad=False,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, params=[0])  # fmt: skip
    state = {
        0: {"step": torch.tensor(2.0), "exp_avg": torch.tensor([1.0]), "exp_avg_sq": torch.tensor([0.4375])}
    }
    return {"state": state, "param_groups": [group]}


@pytest.mark.parametrize("target", ["adam", "adamx"])
def test_an_adamw_state_without_the_decoupled_key_converts(target):
    """A group without decoupled_weight_decay is AdamW's (decoupled): converted, not refused, wd kept."""
    saved = _old_adamw_state(0.2)
    out = adamx.convert_state_dict(copy.deepcopy(saved), "torch.optim.AdamW", target)
    assert out["param_groups"][0]["weight_decay"] == 0.2
    assert out["state"][0]["exp_avg_sq"].tolist() == [1.0]  # 0.4375 / (1 - 0.75^2)


def test_a_coupled_adam_state_with_weight_decay_is_refused():
    """decoupled_weight_decay=False with wd != 0 is torch.optim.Adam's L2 penalty: refused by name."""
    saved = _old_adamw_state(0.2)
    saved["param_groups"][0]["decoupled_weight_decay"] = False
    with pytest.raises(ValueError, match=r"weight_decay=0.2 added to the gradient"):
        adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")
    saved["param_groups"][0]["weight_decay"] = 0.0  # no penalty: nothing to disagree about
    assert (
        adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx")["param_groups"][0]["weight_decay"]
        == 0.0
    )


# ---------------------------------------------------------------- from test_optim_edges_exact.py: Edges of the optimizer internals with exact expected values: one-element tensor


@pytest.mark.parametrize("shape", [(), (1,)])
def test_one_element_tensor_lr_and_weight_decay_are_numbers(shape):
    """lr/wd given as one-element tensors (a scheduler's) give exactly the float results."""
    runs = []
    for as_tensor in (False, True):
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        lr, wd = (torch.full(shape, 0.5), torch.full(shape, 0.25)) if as_tensor else (0.5, 0.25)
        opt = adamx.AdamX([p], lr=lr, weight_decay=wd, eps=0.1)
        p.grad = torch.tensor([1.0, 0.5])
        opt.step()
        runs.append(p.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["lr", "weight_decay"])
def test_a_tensor_hyperparameter_with_two_values_is_refused_by_shape(name):
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(
        ValueError, match=rf"Invalid {name}: a tensor {name} must hold one value, got shape \(2,\)"
    ):
        adamx.AdamX([p], **{name: torch.tensor([0.1, 0.2])})


def test_accumulating_beta2_when_beta2_hat_is_one():
    """w = 1 - beta2_hat = 0 gives x = 0: v is rescaled up by 2^30 (capped at 2^60 overall), exactly."""
    beta, new_scale, rescale = _adaptive.accumulating_beta2(0.0, 1.0)
    assert (rescale, new_scale) == (2.0**30, 2.0**30)
    assert beta == 1.0 - _adaptive._MIN_KERNEL_WEIGHT
    _, new_scale, rescale = _adaptive.accumulating_beta2(0.0, 2.0**45)  # cap: 2^60 / 2^45 = 2^15
    assert (rescale, new_scale) == (2.0**15, 2.0**60)


def test_accumulating_beta2_keeps_x_in_its_band():
    """w = 2^-20: x = w / (1 - w) is above 2^-25, so v' is halved 7 times (2^-26.5 / 2^-20 rounds to 2^-7)."""
    w = 2.0**-20
    beta, new_scale, rescale = _adaptive.accumulating_beta2(w, 1.0)
    assert rescale == 2.0**-7
    assert new_scale == 2.0**-7 / (1.0 - w)
    assert beta == 1.0 - new_scale * w


def _saved(exported_m: torch.Tensor) -> dict:
    stored_m, stored_v = torch.tensor([2.0, 4.0]), torch.tensor([8.0, 16.0])
    return {
        "step": torch.tensor(3.0),
        "exp_avg": exported_m,
        "exp_avg_sq": torch.tensor([2.0, 4.0]),  # = stored_v / 4
        "fused_exp_avg": stored_m,
        "fused_exp_avg_sq": stored_v,
        "fused_exp_avg_scale": 2.0,
        "fused_exp_avg_sq_scale": 4.0,
        "fused_decay_carry": 0.5,
    }


def test_internal_state_restores_the_scaled_copies_while_they_match():
    saved = _saved(torch.tensor([1.0, 2.0]))  # = stored_m / 2
    live = internal_state(saved)
    assert live["exp_avg"] is saved["fused_exp_avg"] and live["exp_avg_scale"] == 2.0
    assert live["exp_avg_sq"] is saved["fused_exp_avg_sq"] and live["exp_avg_sq_scale"] == 4.0
    assert live["decay_carry"] == 0.5 and "fused_exp_avg" not in live


@pytest.mark.parametrize(
    "exported",
    [torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([[1.0, 2.0]])],
    ids=["edited value", "other dtype", "other shape"],
)
def test_an_exported_moment_that_no_longer_matches_wins_with_scale_one(exported):
    """A moment edited or converted after export (value, dtype or shape) is used as it is, scale 1."""
    live = internal_state(_saved(exported))
    assert live["exp_avg"] is exported and live["exp_avg_scale"] == 1.0
    assert live["exp_avg_sq_scale"] == 4.0  # the other moment still matches its copy
