"""One state_dict layout whatever the path (issue 17): exported moments agree across paths, the fused path's
scaled form comes back bit for bit, and every class loads a state_dict that lacks its optional group keys.

Exact values of what the optimizers save and what the registry, convert and param_groups hand out
(issue 16, pattern 3): every default of every registry name, every state slot a conversion fills (with two
param groups whose betas and step counts differ), the step counter after a load, the canonical layout."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

import adamx
from adamx.state import canonical_state, internal_state

# ---------------------------------------------------------------- from test_optim_state.py: One state_dict layout whatever the path (issue 17): exported moments agree acros


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


# ---------------------------------------------------------------- from test_optim_state_exact.py: Exact values of what the optimizers save and what the registry, convert and para


def _w(n: int = 2) -> list[torch.Tensor]:
    return [torch.zeros(n, requires_grad=True)]


# ---- registry: the right class with the right defaults ------------------------------------------------------

# fused="auto" (issue 23): torch's fused kernel where the device supports it, as configs/optimizer/*.yaml say
ADAM_FAMILY = dict(lr=1e-3, eps=1e-8, weight_decay=0.01, foreach=None, fused="auto", capturable=False)
REGISTRY = {
    "adamx": (adamx.AdamX, dict(ADAM_FAMILY, betas=(0.9, 0.99), beta2_schedule="adamx")),
    "adam": (adamx.AdamX, dict(ADAM_FAMILY, betas=(0.9, 0.999), beta2_schedule="adam")),
    "adam+adamx": (adamx.AdamX, dict(ADAM_FAMILY, betas=(0.9, 0.99), beta2_schedule="adamx")),
    "adam+adafactor": (adamx.AdamX, dict(ADAM_FAMILY, betas=(0.9, 0.8), beta2_schedule="adafactor")),
    "adam+adax": (adamx.AdamX, dict(ADAM_FAMILY, betas=(0.9, 1e-4), beta2_schedule="adax")),
    "adax": (
        adamx.AdaX,
        dict(
            lr=1e-3,
            betas=(0.9, 1e-4),
            eps=1e-12,
            weight_decay=0.01,
            foreach=None,
            fused="auto",
            capturable=False,
        ),
    ),
    "lion": (adamx.Lion, dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1, foreach=None)),
    "sophiag": (
        adamx.SophiaG,
        dict(lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=0.1, bs=5120, foreach=None),
    ),
    "sgd": (
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, weight_decay=1e-3, dampening=0, nesterov=False, maximize=False),
    ),
    "radam": (
        torch.optim.RAdam,
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True),
    ),
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_name_gives_the_class_and_every_default(name: str) -> None:
    """Each name builds exactly its class with the paper's hyperparameters (incl. SophiaG's bs = 5120, which no
    config lists), so a default changed in the registry or in a class signature is caught."""
    cls, expected = REGISTRY[name]
    opt = adamx.create_optimizer(name, _w())
    assert type(opt) is cls
    group = opt.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value and type(group[key]) is type(value), f"{name}: {key} = {group[key]!r}"


def test_registry_keywords_override_defaults_and_groups_override_keywords() -> None:
    """Keywords win over the registry's defaults, a group's own value wins over both; betas lists become tuples."""
    a, b = _w(), _w()
    opt = adamx.create_optimizer(
        "lion", [{"params": a, "weight_decay": 0.3}, {"params": b}], lr=0.5, betas=[0.5, 0.25]
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.1]
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    assert opt.param_groups[1]["betas"] == (0.5, 0.25)
    opt = adamx.create_optimizer("adam+adafactor", _w(), betas=[0.8, 0.5], eps=0.1)
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.5) and group["eps"] == 0.1 and group["beta2_schedule"] == "adafactor"
    with pytest.raises(ValueError, match="beta2_schedule is fixed to 'adax'"):
        adamx.create_optimizer("adam+adax", _w(), beta2_schedule="adamx")


def test_adamx_class_defaults_are_algorithm_1s() -> None:
    """AdamX() itself: lr 1e-3, betas (0.9, 0.99), eps 1e-8, weight decay 0.01, AdamX's schedule."""
    group = adamx.AdamX(_w()).param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["beta2_schedule"]) == (
        1e-3,
        (0.9, 0.99),
        1e-8,
        0.01,
        "adamx",
    )


# ---- state_dict: exact slots and the step counter ------------------------------------------------------------

PATHS = ["single", "foreach", "fused", "capturable"]


def _path_kw(path: str) -> dict:
    return dict(foreach=path == "foreach", fused=path == "fused", capturable=path == "capturable")


def _grads_exact(t: int) -> list[torch.Tensor]:
    return [
        torch.tensor([0.5 * t, -1.0, 0.25], dtype=torch.float64),
        torch.tensor([2.0 - t], dtype=torch.float64),
    ]


def _train_exact(opt, params, start: int, steps: int) -> None:
    for t in range(start + 1, start + steps + 1):
        for p, g in zip(params, _grads_exact(t)):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("path", PATHS)
def test_adamx_state_dict_slots_and_step_after_load(path: str) -> None:
    """After 3 steps the export holds step = 3 and Algorithm 1's v_3 / raw m_3 per parameter, each group's own
    hyperparameters; a fresh optimizer built with other values loads them all and its next step is step 4."""
    params = [torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)]
    params = [p.requires_grad_() for p in params]
    groups = [
        {"params": [params[0]], "lr": 0.1, "betas": (0.5, 0.5), "eps": 0.01, "weight_decay": 0.2},
        {"params": [params[1]], "lr": 0.3, "betas": (0.0, 0.9), "eps": 0.1, "weight_decay": 0.0},
    ]
    opt = adamx.AdamX(groups, **_path_kw(path))
    _train_exact(opt, params, 0, 3)
    sd = opt.state_dict()
    st = sd["state"][0]
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(st) and not {"exp_avg_scale", "exp_avg_sq_scale"} & set(
        st
    )
    assert torch.is_tensor(st["step"]) and st["step"].item() == 3.0
    # raw m with beta1 = 0.5 over g = 0.5, 1.0, 1.5 (first element): 0.25 -> 0.625 -> 1.0625
    assert st["exp_avg"][0].item() == pytest.approx(1.0625, rel=1e-14)
    # second element: g = -1 every step, so m_t = -1 (raw: -(1 - 0.5^3)) and v_t = 1 exactly
    assert st["exp_avg"][1].item() == pytest.approx(-0.875, rel=1e-14)
    assert st["exp_avg_sq"][1].item() == pytest.approx(1.0, rel=1e-14)
    # beta1 = 0: exp_avg is the last gradient itself
    assert sd["state"][1]["exp_avg"].tolist() == pytest.approx([2.0 - 3], rel=1e-14)
    assert [(g["lr"], g["betas"], g["eps"], g["weight_decay"]) for g in sd["param_groups"]] == [
        (0.1, (0.5, 0.5), 0.01, 0.2),
        (0.3, (0.0, 0.9), 0.1, 0.0),
    ]

    copies = [p.detach().clone().requires_grad_() for p in params]
    loaded = adamx.AdamX(
        [{"params": [copies[0]]}, {"params": [copies[1]]}],
        lr=9.0,
        betas=(0.1, 0.2),
        eps=1.0,
        weight_decay=0.7,
        **_path_kw(path),
    )
    loaded.load_state_dict(copy.deepcopy(sd))
    assert [(g["lr"], g["betas"], g["eps"], g["weight_decay"]) for g in loaded.param_groups] == [
        (0.1, (0.5, 0.5), 0.01, 0.2),
        (0.3, (0.0, 0.9), 0.1, 0.0),
    ]
    for p in copies:
        assert loaded.state[p]["step"].item() == 3.0
    _train_exact(loaded, copies, 3, 1)
    _train_exact(opt, params, 3, 1)
    for p, q in zip(copies, params):
        assert loaded.state[p]["step"].item() == 4.0
        assert torch.equal(p, q)


def test_int_step_of_an_old_checkpoint_is_taken_as_is() -> None:
    """An int ``step`` (adamx 0.1.0) is that many steps done: the next step uses t = step + 1."""
    w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = adamx.AdamX([w], lr=0.1, betas=(0.5, 0.5), eps=0.0, weight_decay=0.0)
    sd = {
        "state": {0: {"step": 1, "exp_avg": torch.tensor([0.5], dtype=torch.float64),
                      "exp_avg_sq": torch.tensor([1.0], dtype=torch.float64)}},
        "param_groups": [dict(opt.param_groups[0], params=[0])],
    }  # fmt: skip
    opt.load_state_dict(sd)
    w.grad = torch.tensor([-1.0], dtype=torch.float64)
    opt.step()
    # t = 2: raw m = 0.5 * 0.5 + 0.5 * (-1) = -0.25, m_2 = -0.25 / 0.75 = -1/3;
    # v_2 = (2 - sqrt2) * 1 + (sqrt2 - 1) * 1 = 1; theta = 1 - 0.1 * (-1/3) / 1
    assert w.item() == pytest.approx(1 + 0.1 / 3, rel=1e-14)
    assert opt.state[w]["step"].item() == 2.0


def test_sophiag_and_lion_state_slots() -> None:
    """SophiaG saves an int step, m and h; Lion saves only m; both come back exactly after a load."""
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    sophia = adamx.SophiaG([w], betas=(0.5, 0.25), bs=1)
    for _ in range(3):
        w.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
        sophia.step()
    sophia.update_hessian()  # h = 0.75 * [1, 4]
    st = sophia.state_dict()["state"][0]
    assert set(st) == {"step", "exp_avg", "hessian"} and st["step"] == 3 and type(st["step"]) is int
    assert st["exp_avg"].tolist() == [0.875, 1.75] and st["hessian"].tolist() == [0.75, 3.0]
    again = adamx.SophiaG([w.detach().clone().requires_grad_()])
    again.load_state_dict(sophia.state_dict())
    assert next(iter(again.state.values()))["step"] == 3

    lion = adamx.Lion([w], betas=(0.5, 0.25))
    w.grad = torch.tensor([4.0, -8.0], dtype=torch.float64)
    lion.step()
    st = lion.state_dict()["state"][0]
    assert set(st) == {"exp_avg"} and st["exp_avg"].tolist() == [3.0, -6.0]  # 0.75 g


# ---- the canonical layout ------------------------------------------------------------------------------------


def test_canonical_state_unscales_each_moment_by_its_own_scale() -> None:
    """Fused state with exp_avg_scale 2, exp_avg_sq_scale 4, carry 1.5: exported moments are stored / own
    scale, the fused_* entries keep the stored tensors and numbers, and internal_state restores each slot."""
    step = torch.tensor(7.0)
    live = {
        "step": step,
        "exp_avg": torch.tensor([2.0, -4.0]),
        "exp_avg_sq": torch.tensor([8.0, 12.0]),
        "exp_avg_scale": 2.0,
        "exp_avg_sq_scale": 4.0,
        "decay_carry": 1.5,
    }
    out = canonical_state(live)
    assert out["exp_avg"].tolist() == [1.0, -2.0] and out["exp_avg_sq"].tolist() == [2.0, 3.0]
    assert out["fused_exp_avg"] is live["exp_avg"] and out["fused_exp_avg_sq"] is live["exp_avg_sq"]
    assert (out["fused_exp_avg_scale"], out["fused_exp_avg_sq_scale"], out["fused_decay_carry"]) == (
        2.0,
        4.0,
        1.5,
    )
    assert out["step"].item() == 7.0 and out["step"] is not step  # a snapshot
    assert "exp_avg_scale" not in out and "decay_carry" not in out
    back = internal_state(out)
    assert back["exp_avg"] is live["exp_avg"] and back["exp_avg_sq"] is live["exp_avg_sq"]
    assert (back["exp_avg_scale"], back["exp_avg_sq_scale"], back["decay_carry"]) == (2.0, 4.0, 1.5)
    assert not any(key.startswith("fused_") for key in back)

    plain = canonical_state({**live, "exp_avg_scale": 1.0, "exp_avg_sq_scale": 1.0, "decay_carry": 1.0})
    assert set(plain) == {"step", "exp_avg", "exp_avg_sq"} and plain["exp_avg"] is live["exp_avg"]
    restored = internal_state(plain)
    assert (restored["exp_avg_scale"], restored["exp_avg_sq_scale"], restored["decay_carry"]) == (
        1.0,
        1.0,
        1.0,
    )


# ---- convert: every slot from the right place ----------------------------------------------------------------


def _adamw_state_dict() -> dict:
    """A torch AdamW state_dict built by hand: two groups with different betas; steps 2, 3 and 1."""
    f = lambda *x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return {
        "state": {
            # 1 - 0.75^2 = 0.4375, 1 - 0.75^3 = 0.578125, 1 - 0.5^1 = 0.5
            0: {"step": torch.tensor(2.0), "exp_avg": f(1.0, -2.0), "exp_avg_sq": f(0.4375, 0.875)},
            1: {"step": torch.tensor(3.0), "exp_avg": f(0.5), "exp_avg_sq": f(0.578125)},
            2: {"step": torch.tensor(1.0), "exp_avg": f(3.0), "exp_avg_sq": f(0.5)},
        },
        "param_groups": [
            dict(lr=0.1, betas=(0.5, 0.75), eps=1e-3, weight_decay=0.2, amsgrad=False, maximize=False,
                 foreach=None, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=True,
                 params=[0, 1]),
            dict(lr=0.2, betas=(0.8, 0.5), eps=1e-6, weight_decay=0.0, amsgrad=False, maximize=False,
                 foreach=None, capturable=False, differentiable=False, fused=None, decoupled_weight_decay=True,
                 params=[2]),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("target", ["adam", "adamx"])
def test_adamw_conversion_fills_every_slot_from_its_own_group(target: str) -> None:
    """v / (1 - beta2^t) with EACH parameter's own group beta2 and own step; m and t as they are; lr, beta1,
    eps, wd per group; beta2 AdamW's for 'adam', 0.99 (or the option) for 'adamx'; the input untouched."""
    saved = _adamw_state_dict()
    before = copy.deepcopy(saved)
    out = adamx.convert_state_dict(saved, "torch.optim.AdamW", target)
    for pid, m, v, t in [(0, [1.0, -2.0], [1.0, 2.0], 2), (1, [0.5], [1.0], 3), (2, [3.0], [1.0], 1)]:
        st = out["state"][pid]
        assert st["step"] == t and st["exp_avg"].tolist() == m and st["exp_avg_sq"].tolist() == v
        assert st["exp_avg"] is not saved["state"][pid]["exp_avg"]
    beta2 = {"adam": (0.75, 0.5), "adamx": (0.99, 0.99)}[target]
    got = [
        (g["lr"], g["betas"], g["eps"], g["weight_decay"], g["beta2_schedule"], g["params"])
        for g in out["param_groups"]
    ]
    assert got == [
        (0.1, (0.5, beta2[0]), 1e-3, 0.2, target, [0, 1]),
        (0.2, (0.8, beta2[1]), 1e-6, 0.0, target, [2]),
    ]
    for pid in saved["state"]:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(saved["state"][pid][key], before["state"][pid][key])
    if target == "adamx":
        other = adamx.convert_state_dict(saved, "torch.optim.AdamW", "adamx", beta2=0.9)
        assert [g["betas"] for g in other["param_groups"]] == [(0.5, 0.9), (0.8, 0.9)]


def test_converted_state_lands_in_the_optimizer_slots() -> None:
    """Loading the conversion puts step, m and v of each parameter on that parameter (not its neighbour)."""
    params = [
        torch.zeros(2, requires_grad=True),
        torch.zeros(1, requires_grad=True),
        torch.zeros(1, requires_grad=True),
    ]
    opt = adamx.AdamX([{"params": params[:2]}, {"params": params[2:]}])
    opt.load_state_dict(adamx.convert_state_dict(_adamw_state_dict(), "torch.optim.AdamW", "adamx"))
    assert [opt.state[p]["step"].item() for p in params] == [2.0, 3.0, 1.0]
    assert [opt.state[p]["exp_avg"].tolist() for p in params] == [[1.0, -2.0], [0.5], [3.0]]
    assert [opt.state[p]["exp_avg_sq"].tolist() for p in params] == [[1.0, 2.0], [1.0], [1.0]]
    assert opt.param_groups[1]["lr"] == 0.2 and opt.param_groups[0]["betas"] == (0.5, 0.99)


def test_adam_to_adamw_multiplies_back_and_unscales_fused_moments() -> None:
    """adam -> AdamW: v (1 - beta2^t) per group, m and v divided by their fused scales first, step as a float32
    tensor, AdamW's flags off."""
    f = lambda *x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    saved = {
        "state": {
            0: {"step": 2, "exp_avg": f(2.0), "exp_avg_sq": f(4.0), "exp_avg_scale": 2.0, "exp_avg_sq_scale": 4.0},
            1: {"step": torch.tensor(3.0), "exp_avg": f(-1.0), "exp_avg_sq": f(1.0)},
        },
        "param_groups": [
            dict(lr=0.1, betas=(0.5, 0.75), eps=1e-3, weight_decay=0.2, beta2_schedule="adam", params=[0]),
            dict(lr=0.2, betas=(0.8, 0.5), eps=1e-6, weight_decay=0.0, beta2_schedule="adam", params=[1]),
        ],
    }  # fmt: skip
    out = adamx.convert_state_dict(saved, "adam", "torch.optim.AdamW")
    st0, st1 = out["state"][0], out["state"][1]
    assert st0["step"].dtype == torch.float32 and st0["step"].item() == 2.0 and st1["step"].item() == 3.0
    assert st0["exp_avg"].tolist() == [1.0] and st0["exp_avg_sq"].tolist() == [0.4375]  # 1 * (1 - 0.75^2)
    assert st1["exp_avg"].tolist() == [-1.0] and st1["exp_avg_sq"].tolist() == [0.875]  # 1 - 0.5^3
    g0 = out["param_groups"][0]
    assert (g0["lr"], g0["betas"], g0["eps"], g0["weight_decay"]) == (0.1, (0.5, 0.75), 1e-3, 0.2)
    assert (g0["amsgrad"], g0["maximize"], g0["decoupled_weight_decay"]) == (False, False, True)


def test_lion_pytorch_conversion_copies_m_and_rescales_decoupled_decay() -> None:
    """exp_avg copied per parameter; with decoupled_init_lr the weight decay is wd / init_lr per group."""
    saved = {
        "state": {0: {"exp_avg": torch.tensor([1.0, 2.0])}, 1: {"exp_avg": torch.tensor([-3.0])}},
        "param_groups": [
            dict(lr=1e-3, betas=[0.5, 0.25], weight_decay=0.2, params=[0]),
            dict(lr=2e-3, betas=[0.9, 0.99], weight_decay=0.0, params=[1]),
        ],
    }
    out = adamx.convert_state_dict(saved, "lion-pytorch", "lion", decoupled_init_lr=0.5)
    assert out["state"][0]["exp_avg"].tolist() == [1.0, 2.0] and out["state"][1]["exp_avg"].tolist() == [-3.0]
    assert out["state"][0]["exp_avg"] is not saved["state"][0]["exp_avg"]
    assert [(g["lr"], g["betas"], g["weight_decay"]) for g in out["param_groups"]] == [
        (1e-3, (0.5, 0.25), 0.4),
        (2e-3, (0.9, 0.99), 0.0),
    ]


# ---- decay_param_groups --------------------------------------------------------------------------------------


def test_decay_param_groups_exact_membership() -> None:
    """Frozen weights are left out, the decay value is a float, decay group first, a model without Conv2d or
    Linear weights gives one group with weight decay 0."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    model[2].weight.requires_grad_(False)
    groups = adamx.decay_param_groups(model, 1)
    assert [g["weight_decay"] for g in groups] == [1.0, 0.0] and type(groups[0]["weight_decay"]) is float
    assert [id(p) for p in groups[0]["params"]] == [id(model[0].weight)]
    assert {id(p) for p in groups[1]["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    only = adamx.decay_param_groups(nn.Sequential(nn.LayerNorm(3)), 0.5)
    assert len(only) == 1 and only[0]["weight_decay"] == 0.0 and len(only[0]["params"]) == 2


@pytest.mark.parametrize("step", [0, 2.5, torch.tensor(0.0)])
def test_conversion_refuses_a_step_that_was_never_taken(step) -> None:
    """step 0 (or a fraction) cannot be a state that has taken steps: 1 - beta2^0 = 0 would divide v by 0."""
    saved = _adamw_state_dict()
    saved["state"][1]["step"] = step
    with pytest.raises(ValueError, match="step >= 1"):
        adamx.convert_state_dict(saved, "torch.optim.AdamW", "adam")


# ---------------------------------------------------------------- the fused path's scale bookkeeping, key by key


def test_fused_key_of_a_state_without_the_fused_entries_is_unscaled():
    from adamx.state import fused_key

    assert fused_key({}) == (1.0, 1.0, 1.0)
    assert fused_key({"exp_avg_scale": 0.5}) == (0.5, 1.0, 1.0)
    assert fused_key({"exp_avg_sq_scale": 0.25, "decay_carry": 0.9}) == (1.0, 0.25, 0.9)


@pytest.mark.parametrize(("a", "b"), [(2.0, 1.0), (1.0, 3.0), (1.0, 2.0), (4.0, 8.0), (1.0, 1.0)])
def test_make_exact_divides_each_moment_by_its_own_scale(a, b):
    from adamx.state import make_exact

    m, v = torch.tensor([2.0, -6.0]), torch.tensor([8.0, 24.0])
    state = {
        "exp_avg": m.clone(),
        "exp_avg_sq": v.clone(),
        "exp_avg_scale": a,
        "exp_avg_sq_scale": b,
        "decay_carry": 0.5,
    }
    make_exact(state)
    assert torch.equal(state["exp_avg"], m / a) and torch.equal(state["exp_avg_sq"], v / b)
    assert (state["exp_avg_scale"], state["exp_avg_sq_scale"], state["decay_carry"]) == (1.0, 1.0, 0.5)


def _moments() -> dict:
    return {
        "step": torch.tensor(3.0),
        "exp_avg": torch.tensor([2.0, -4.0]),
        "exp_avg_sq": torch.tensor([8.0, 12.0]),
    }


def test_canonical_state_of_a_state_without_fused_entries_is_unscaled():
    """A live state lacking the fused entries (written before they existed, or by another tool) exports as
    one whose missing entries are 1.0: nothing to unscale, no fused_* copy."""
    live = _moments()
    out = canonical_state(live)
    assert set(out) == {"step", "exp_avg", "exp_avg_sq"} and out["exp_avg"] is live["exp_avg"]
    partial = canonical_state({**live, "exp_avg_scale": 2.0})  # only m scaled: v and the carry count as 1.0
    assert partial["exp_avg"].tolist() == [1.0, -2.0] and partial["exp_avg_sq"].tolist() == [8.0, 12.0]
    assert (
        partial["fused_exp_avg_scale"],
        partial["fused_exp_avg_sq_scale"],
        partial["fused_decay_carry"],
    ) == (
        2.0,
        1.0,
        1.0,
    )


def test_an_export_from_before_the_decay_carry_loads_with_carry_one():
    """fused_* entries without fused_decay_carry (saved before the carry existed): the scales come back and
    the carry is 1.0 (nothing carried)."""
    live = {**_moments(), "exp_avg_scale": 2.0, "exp_avg_sq_scale": 4.0, "decay_carry": 1.5}
    saved = canonical_state(live)
    del saved["fused_decay_carry"]
    back = internal_state(saved)
    assert (back["exp_avg_scale"], back["exp_avg_sq_scale"], back["decay_carry"]) == (2.0, 4.0, 1.0)


@pytest.mark.parametrize(
    "change",
    [lambda t: t.double(), lambda t: t.reshape(1, -1)],
    ids=["another-dtype", "another-shape"],
)
def test_a_fused_copy_of_another_dtype_or_shape_than_the_exported_moment_is_not_used(change):
    """exact_moment of the fused copy must equal the exported moment in dtype and shape too (a converted or
    hand-edited state): otherwise the exported moment wins with scale 1; the other slot still restores."""
    live = {**_moments(), "exp_avg_scale": 2.0, "exp_avg_sq_scale": 4.0, "decay_carry": 1.5}
    saved = canonical_state(live)
    saved["fused_exp_avg"] = change(saved["fused_exp_avg"])
    back = internal_state(saved)
    assert back["exp_avg"] is saved["exp_avg"] and back["exp_avg_scale"] == 1.0
    assert back["exp_avg_sq"] is live["exp_avg_sq"] and back["exp_avg_sq_scale"] == 4.0


def test_live_state_in_place_leaves_no_exported_entry_behind():
    """ZeroRedundancyOptimizer writes the exported state straight into optimizer.state: in place, it becomes
    the live layout (scaled moments and their scales back) and no fused_* entry stays."""
    from adamx.state import live_state_in_place

    live = {**_moments(), "exp_avg_scale": 2.0, "exp_avg_sq_scale": 4.0, "decay_carry": 1.5}
    state = canonical_state(live)
    live_state_in_place(state)
    assert sorted(state) == sorted(live)
    assert state["exp_avg"] is live["exp_avg"] and state["exp_avg_sq"] is live["exp_avg_sq"]
    assert (state["exp_avg_scale"], state["exp_avg_sq_scale"], state["decay_carry"]) == (2.0, 4.0, 1.5)
