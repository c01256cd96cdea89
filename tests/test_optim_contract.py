"""torch.optim's contract for every adamx optimizer: resume, closure, skipped params, errors, AMP, dtypes."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import adamx

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
