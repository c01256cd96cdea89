"""One state_dict layout whatever the path (issue 17): exported moments agree across paths, the fused path's
scaled form comes back bit for bit, and every class loads a state_dict that lacks its optional group keys."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

import adamx

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(7, 5), (13,), (3, 4, 5)]


def _grads(t: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(500 + t)
    scale = 1.0 + 0.5 * math.sin(t / 7.0)
    return [(torch.randn(s, generator=g) * scale).to(dtype) for s in SHAPES]


def _params(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in SHAPES]


def _groups(params: list[torch.Tensor]) -> list[dict]:
    return [
        {"params": params[:2], "lr": 1e-2, "weight_decay": 0.05},
        {"params": params[2:], "lr": 2e-2, "weight_decay": 0.0},
    ]


def _train(opt, params, start: int, steps: int) -> None:
    for t in range(start + 1, start + steps + 1):
        for p, g in zip(params, _grads(t, params[0].dtype)):
            p.grad = g
        opt.step()
        if isinstance(opt, adamx.SophiaG) and t % 5 == 0:
            for p, g in zip(params, _grads(-t, params[0].dtype)):
                p.grad = g
            opt.update_hessian()


def _roundtrip(state_dict: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as a checkpoint travels."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _path_kwargs(path: str) -> dict:
    return dict(foreach=path == "foreach", fused=path == "fused")


# ---- missing param-group keys ------------------------------------------------------------------------------

CLASSES = [
    ("adamx-single", lambda g: adamx.AdamX(g, foreach=False), "eps"),
    ("adamx-fused", lambda g: adamx.AdamX(g, fused=True), "eps"),
    ("adam-foreach", lambda g: adamx.create_optimizer("adam", g, foreach=True), "eps"),
    ("adam+adafactor", lambda g: adamx.create_optimizer("adam+adafactor", g), "eps"),
    ("adax-fused", lambda g: adamx.AdaX(g, fused=True), "eps"),
    ("lion", lambda g: adamx.Lion(g, weight_decay=0.1), None),
    ("lion-single", lambda g: adamx.Lion(g, weight_decay=0.1, foreach=False), None),
    ("sophiag", lambda g: adamx.SophiaG(g, bs=8), "rho"),
    ("sophiag-single", lambda g: adamx.SophiaG(g, bs=8, foreach=False), "rho"),
]


@pytest.mark.parametrize("build,extra", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_state_dict_without_optional_group_keys_loads_and_continues(build, extra) -> None:
    """Strip every group key but the rule's own numbers (what lion-pytorch or the Sophia authors save): the
    loaded optimizer takes the constructor's values (beta2_schedule 'adam' for the registry's "adam", the
    path, bs) and continues bit for bit like the optimizer that saved."""
    required = {"params", "lr", "betas", "weight_decay", *([extra] if extra else [])}
    params = _params()
    opt = build(_groups(params))
    _train(opt, params, 0, 12)
    saved = copy.deepcopy(opt.state_dict())
    stripped = 0
    for group in saved["param_groups"]:
        for key in set(group) - required:
            del group[key]
            stripped += 1
    assert stripped > 0
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = build(_groups(params2))
    opt2.load_state_dict(_roundtrip(saved))
    for group, group2 in zip(opt.param_groups, opt2.param_groups):
        assert {k: v for k, v in group.items() if k != "params"} == {
            k: v for k, v in group2.items() if k != "params"
        }
    _train(opt, params, 12, 8)
    _train(opt2, params2, 12, 8)
    for p, p2 in zip(params, params2):
        assert torch.equal(p, p2)


@pytest.mark.parametrize(
    "build,fallback",
    [
        (lambda g: adamx.AdamX(g), {"foreach": None, "fused": None, "beta2_schedule": "adamx"}),
        (lambda g: adamx.AdaX(g), {"foreach": None, "fused": None}),
        (lambda g: adamx.Lion(g), {"foreach": None}),
        (lambda g: adamx.SophiaG(g), {"foreach": None, "bs": 5120}),
    ],
    ids=["AdamX", "AdaX", "Lion", "SophiaG"],
)
def test_unpickled_old_optimizer_gets_class_defaults(build, fallback) -> None:
    """A pickle of an optimizer from before a key existed lacks it in ``defaults`` too: the class default."""
    params = _params()
    opt = build(_groups(params))
    for key in fallback:
        del opt.defaults[key]
        for group in opt.param_groups:
            del group[key]
    revived = copy.deepcopy(opt)  # Optimizer pickles as (defaults, state, param_groups): __setstate__ runs
    for group in revived.param_groups:
        assert {k: group[k] for k in fallback} == fallback
    assert {k: revived.defaults[k] for k in fallback} == fallback
    _train(revived, [p for g in revived.param_groups for p in g["params"]], 0, 6)


# ---- the canonical layout -----------------------------------------------------------------------------------

FAMILY = [
    ("adamx", lambda g, **kw: adamx.AdamX(g, **kw)),
    ("adam", lambda g, **kw: adamx.create_optimizer("adam", g, **kw)),
    ("adam+adafactor", lambda g, **kw: adamx.create_optimizer("adam+adafactor", g, **kw)),
    ("adax", lambda g, **kw: adamx.AdaX(g, **kw)),
]


@pytest.mark.parametrize("build", [f[1] for f in FAMILY], ids=[f[0] for f in FAMILY])
def test_exported_moments_agree_across_paths(build) -> None:
    """After the same 200 steps the single-tensor, foreach and fused paths export the same moments: measured
    <= 2.0e-7 (exp_avg) and <= 7.6e-7 (exp_avg_sq) of each tensor's largest entry (fused vs single; foreach
    equals single on CPU), float32 rounding accumulated over the run. Before issue 17 the fused path exported
    exp_avg_sq times a scale of ~1e-7."""
    exported = {}
    for path in ("single", "foreach", "fused"):
        params = _params()
        opt = build(_groups(params), **_path_kwargs(path))
        _train(opt, params, 0, 200)
        exported[path] = _roundtrip(opt.state_dict())["state"]
    for path in ("foreach", "fused"):
        for pid, single in exported["single"].items():
            st = exported[path][pid]
            assert st["step"] == single["step"] == 200
            assert set(single) == {"step", "exp_avg", "exp_avg_sq"}
            assert {k for k in st if not k.startswith("fused_")} == set(single)
            for key, bound in (("exp_avg", 1e-6), ("exp_avg_sq", 5e-6)):
                assert st[key].dtype == single[key].dtype == torch.float32
                err = ((st[key] - single[key]).abs().max() / single[key].abs().max()).item()
                assert err < bound, f"{path} {key} param {pid}: {err:.2e}"


def _live(opt) -> list[dict]:
    return [copy.deepcopy(opt.state[p]) for g in opt.param_groups for p in g["params"]]


def _assert_same_live(a: list[dict], b: list[dict]) -> None:
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_fused_state_round_trip_is_bit_exact(dtype) -> None:
    """save -> torch.save/load -> load_state_dict gives back the fused path's live state bit for bit (scaled
    moments, scales, decay carry), so a resumed run equals the uninterrupted one; state_dict() itself reads
    the live state without changing it."""
    params = _params(dtype)
    opt = adamx.AdamX(_groups(params), fused=True)
    _train(opt, params, 0, 30)
    before = _live(opt)
    if dtype is torch.float64:  # the CPU kernel keeps double betas for float64: nothing to track (issue 13)
        assert before[0]["exp_avg_sq_scale"] == 1.0 and before[0]["decay_carry"] == 1.0
    else:  # the round trip below is exercised on really scaled state
        assert before[0]["exp_avg_sq_scale"] != 1.0 and before[0]["decay_carry"] != 1.0
    saved = _roundtrip(opt.state_dict())
    _assert_same_live(_live(opt), before)  # a pure read

    exported = saved["state"][0]
    assert exported["exp_avg_sq"].dtype == before[0]["exp_avg_sq"].dtype
    exact = before[0]["exp_avg_sq"].double() / before[0]["exp_avg_sq_scale"]
    assert torch.equal(exported["exp_avg_sq"], exact.to(exported["exp_avg_sq"].dtype))

    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = adamx.AdamX(_groups(params2), fused=True)
    opt2.load_state_dict(saved)
    _assert_same_live(_live(opt2), before)
    _train(opt, params, 30, 10)
    _train(opt2, params2, 30, 10)
    for p, p2 in zip(params, params2):
        assert torch.equal(p, p2)


def test_an_edited_exported_moment_wins_over_the_fused_copy() -> None:
    """A tool that rewrites exp_avg_sq (and leaves the fused_* entries) gets its values loaded, at scale 1."""
    params = _params()
    opt = adamx.AdamX(_groups(params), fused=True)
    _train(opt, params, 0, 10)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["exp_avg_sq"] = torch.full(SHAPES[0], 0.25)
    opt2 = adamx.AdamX(_groups([p.detach().clone().requires_grad_() for p in params]), fused=True)
    opt2.load_state_dict(saved)
    live = opt2.state[opt2.param_groups[0]["params"][0]]
    assert torch.equal(live["exp_avg_sq"], torch.full(SHAPES[0], 0.25)) and live["exp_avg_sq_scale"] == 1.0
    # the untouched first moment still comes back in its scaled form
    assert live["exp_avg_scale"] == opt.state[params[0]]["exp_avg_scale"] != 1.0
    assert torch.equal(live["exp_avg"], opt.state[params[0]]["exp_avg"])


@pytest.mark.parametrize("second", ["fused", "single"])
def test_state_written_before_the_canonical_layout_still_resumes(second) -> None:
    """adamx 0.1.0 saved the fused path's live state as is (scaled moments beside exp_avg_scale...): it
    loads unchanged, and continuing from it on any path equals continuing the optimizer that wrote it."""
    params = _params()
    opt = adamx.AdamX(_groups(params), fused=True)
    _train(opt, params, 0, 20)
    old = _roundtrip(copy.deepcopy(torch.optim.Optimizer.state_dict(opt)))
    assert "exp_avg_scale" in old["state"][0]
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = adamx.AdamX(_groups(params2), **_path_kwargs(second))
    opt2.load_state_dict(old)
    for group in [*opt.param_groups, *opt2.param_groups]:
        group.update(_path_kwargs(second))
    _train(opt, params, 20, 10)
    _train(opt2, params2, 20, 10)
    for p, p2 in zip(params, params2):
        assert torch.equal(p, p2)


def test_a_state_dict_kept_in_memory_while_training_goes_on_loads_its_snapshot() -> None:
    """As in torch, state_dict() holds live tensors (here the fused copies); steps taken before it is loaded
    change them, and the loader then takes the exported moments, consistent with its step count."""
    params = _params()
    opt = adamx.AdamX(_groups(params), fused=True)
    _train(opt, params, 0, 10)
    kept = opt.state_dict()
    snapshot = {pid: st["exp_avg_sq"].clone() for pid, st in kept["state"].items()}
    _train(opt, params, 10, 3)
    opt2 = adamx.AdamX(_groups([p.detach().clone().requires_grad_() for p in params]), fused=True)
    opt2.load_state_dict(kept)
    for pid, p in enumerate(opt2.param_groups[0]["params"] + opt2.param_groups[1]["params"]):
        live = opt2.state[p]
        assert live["step"] == 10 and live["exp_avg_sq_scale"] == 1.0
        assert torch.equal(live["exp_avg_sq"], snapshot[pid])
