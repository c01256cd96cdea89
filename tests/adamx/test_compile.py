"""torch.compile(opt.step) and capturable steps: a constant number of graphs on every AdamX/AdaX path, the
same numbers as eager, and CUDA-graph capture (skipped without a GPU: none is lent to this project's CI).

Graphs are counted with Dynamo's CompileCounterWithBackend: every graph Dynamo hands to the backend (a
recompile, or a piece after a graph break) counts once. The first call builds the state (one graph), later
calls replay a second one; a Python int ``step`` or host-side scalars would add one graph per step.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import adamx

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 12
MAX_GRAPHS = 3


def _params(dtypes=(torch.float32, torch.float32, torch.float32)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (4,), (2, 2, 2)]
    return [torch.randn(s, generator=g).to(dt).requires_grad_() for s, dt in zip(shapes, dtypes)]


def _set_grads(params: list[torch.Tensor], i: int) -> None:
    g = torch.Generator().manual_seed(100 + i)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def _groups(params: list[torch.Tensor]) -> list[dict]:
    return [{"params": params[:2], "weight_decay": 0.05}, {"params": params[2:], "weight_decay": 0.0}]


def _compiled_vs_eager(make, backend: str, steps: int = STEPS, dtypes=None, schedule_lr: bool = False):
    """Step an eager and a compiled optimizer on the same gradients; returns (graphs, eager, compiled)."""
    eager_p, comp_p = _params(*([dtypes] if dtypes else [])), _params(*([dtypes] if dtypes else []))
    eager, comp = make(_groups(eager_p)), make(_groups(comp_p))
    scheds = []
    if schedule_lr:  # the LR changes every step, as with any scheduler
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1.0 + s)) for o in (eager, comp)]
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(comp.step, backend=counter)
    for i in range(steps):
        _set_grads(eager_p, i)
        _set_grads(comp_p, i)
        eager.step()
        step()
        for s in scheds:
            s.step()
    return counter.frame_count, eager_p, comp_p


def _assert_close(eager, compiled, rtol: float) -> None:
    for e, c in zip(eager, compiled):
        err = ((e.double() - c.double()).abs().max() / e.double().abs().max()).item()
        assert err <= rtol, f"compiled differs from eager by {err:.2e} relative"


# (id, constructor, tolerance vs eager): the fused group compiles to the foreach math, so it matches eager
# fused to float32 rounding of a 12-step run (measured 5.5e-7), not bit for bit.
CASES = [
    ("adamx-single", lambda g: adamx.AdamX(g, foreach=False), 1e-6),
    ("adamx-foreach", lambda g: adamx.AdamX(g, foreach=True), 1e-6),
    ("adamx-fused", lambda g: adamx.AdamX(g, fused=True), 1e-5),
    ("adamx-capturable", lambda g: adamx.AdamX(g, capturable=True), 1e-6),
    ("adam+adafactor-foreach", lambda g: adamx.create_optimizer("adam+adafactor", g, foreach=True), 1e-6),
    ("adam-fused", lambda g: adamx.create_optimizer("adam", g, fused=True), 1e-5),
    ("adax-single", lambda g: adamx.AdaX(g, foreach=False), 1e-6),
    ("adax-foreach", lambda g: adamx.AdaX(g, foreach=True), 1e-6),
    ("adax-fused", lambda g: adamx.AdaX(g, fused=True), 1e-5),
    ("adax-capturable", lambda g: adamx.AdaX(g, capturable=True), 1e-6),
]


@pytest.mark.parametrize("make,rtol", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.heavy
def test_compiled_step_settles_and_matches_eager(make, rtol) -> None:
    graphs, eager, compiled = _compiled_vs_eager(make, "eager")
    assert graphs <= MAX_GRAPHS, f"{graphs} graphs in {STEPS} steps: the step recompiles"
    _assert_close(eager, compiled, rtol)


@pytest.mark.slow
def test_compiled_step_with_a_changing_lr_and_16_bit_params() -> None:
    """An LR scheduler rewrites lr every step; bf16/fp16 parameters step on float32 working copies."""
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    for make in (lambda g: adamx.AdamX(g, foreach=True), lambda g: adamx.AdaX(g, fused=True)):
        graphs, eager, compiled = _compiled_vs_eager(make, "eager", dtypes=dtypes, schedule_lr=True)
        assert graphs <= MAX_GRAPHS
        for e, c in zip(eager, compiled):
            # 16-bit parameters: one rounding into bf16/fp16 per step, at most one ulp apart
            torch.testing.assert_close(
                c.float(), e.float(), rtol=1e-2 if e.dtype != torch.float32 else 1e-5, atol=0
            )


def test_compiled_step_resumes_a_checkpoint_with_int_steps() -> None:
    """State written by adamx 0.1.0 (``step`` a Python int, fused moment scales != 1) compiles and continues."""
    params = _params()
    opt = adamx.AdamX(_groups(params), fused=True)
    for i in range(3):
        _set_grads(params, i)
        opt.step()
    state = opt.state_dict()  # 0.1.0 saved the live layout: scaled moments beside their scales
    live = [opt.state[p] for group in opt.param_groups for p in group["params"]]
    state["state"] = {i: {**st, "step": int(st["step"])} for i, st in enumerate(live)}
    assert any(st["exp_avg_sq_scale"] != 1.0 for st in state["state"].values())
    eager_p, comp_p = (
        [p.detach().clone().requires_grad_() for p in params],
        [p.detach().clone().requires_grad_() for p in params],
    )
    eager, comp = adamx.AdamX(_groups(eager_p), fused=True), adamx.AdamX(_groups(comp_p), fused=True)
    eager.load_state_dict(copy.deepcopy(state))
    comp.load_state_dict(copy.deepcopy(state))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("eager")
    step = torch.compile(comp.step, backend=counter)
    for i in range(3, 3 + STEPS):
        _set_grads(eager_p, i)
        _set_grads(comp_p, i)
        eager.step()
        step()
    assert counter.frame_count <= MAX_GRAPHS
    _assert_close(eager_p, comp_p, 1e-5)
    assert all(int(st["step"]) == 3 + STEPS for st in comp.state.values())


def _every_path(params: list[torch.Tensor]) -> list[dict]:
    """One param group per path (single, foreach, fused, capturable), alternating weight decay."""
    paths = [dict(foreach=False), dict(foreach=True), dict(fused=True), dict(capturable=True)]
    return [
        {"params": [p], "weight_decay": 0.05 * (i % 2), **kw} for i, (p, kw) in enumerate(zip(params, paths))
    ]


@pytest.mark.slow
@pytest.mark.parametrize("cls", [adamx.AdamX, adamx.AdaX], ids=["adamx", "adax"])
def test_inductor_compiles_every_path_once(cls) -> None:
    """Inductor (tens of seconds per compile here): one optimizer whose groups take every path."""
    params_e = _params() + [torch.ones(3, requires_grad=True)]
    params_c = _params() + [torch.ones(3, requires_grad=True)]
    eager, comp = cls(_every_path(params_e)), cls(_every_path(params_c))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    step = torch.compile(comp.step, backend=counter)
    for i in range(STEPS):
        _set_grads(params_e, i)
        _set_grads(params_c, i)
        eager.step()
        step()
    assert counter.frame_count <= MAX_GRAPHS
    _assert_close(params_e, params_c, 1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA-graph capture needs a GPU; none on this machine"
)
@pytest.mark.parametrize("cls", [adamx.AdamX, adamx.AdaX], ids=["adamx", "adax"])
def test_capturable_step_replays_in_a_cuda_graph(cls) -> None:
    """capturable=True: the whole step (scalars included) is captured once and replayed with new gradients;
    it follows an eager foreach run on the same gradients."""
    device = torch.device("cuda")
    ref_p = [p.detach().to(device).requires_grad_() for p in _params()]
    cap_p = [p.detach().to(device).requires_grad_() for p in _params()]
    ref = cls(_groups(ref_p), foreach=True)
    cap = cls(_groups(cap_p), foreach=True, capturable=True)
    grads = []
    for i in range(STEPS):
        g = torch.Generator().manual_seed(100 + i)
        grads.append([torch.randn(p.shape, generator=g).to(device) for p in cap_p])
    for i in range(STEPS):
        for p, g in zip(ref_p, grads[i]):
            p.grad = g.clone()
        ref.step()
    for p, g in zip(cap_p, grads[0]):
        p.grad = g.clone()  # the static gradient buffers the graph reads
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # step 1 runs eagerly and creates the state
        cap.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # recorded, not run
        cap.step()
    for i in range(1, STEPS):
        for p, g in zip(cap_p, grads[i]):
            p.grad.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    assert all(int(st["step"].item()) == STEPS for st in cap.state.values())
    _assert_close([p.detach().cpu() for p in ref_p], [p.detach().cpu() for p in cap_p], 1e-5)
