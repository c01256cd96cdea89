"""The compile matrix of issue 23: torch.compile(opt.step) for AdamX, AdaX, Lion and SophiaG on every path
(single, foreach, fused, capturable where the optimizer has them), with the eager, aot_eager and inductor
backends, under every scheduler in torch.optim.lr_scheduler (OneCycleLR and CyclicLR also cycle beta1), with
weight decay 0 and 0.01: at most 2 graphs (state creation, then the step), none compiled after the warm-up,
and parameters equal to an eager run on the same gradients within float32 rounding after 50 steps.

One optimizer covers every (path, weight decay) pair of a class: each pair is a param group, so one compiled
step exercises them all. The scheduler axis is covered two ways: one scheduler per run (``run_case``: the fast
suite's corner, and every scheduler with the eager backend), and all seven in sequence on one compiled step
(``run_sequence``: 8 steps under each, 56 in all; the slow matrix for aot_eager and inductor, where a compile
costs 10-60 s on 2 cores): the graph is the same for every scheduler (lr, weight decay and beta1 are tensor
inputs of it), so a scheduler that forced a recompile or was ignored shows up as a graph after the warm-up or
as a difference to eager. The cold/warm inductor cache pair runs in two subprocesses sharing a fresh
TORCHINDUCTOR_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import adamx

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 50
WARMUP = 2  # step 1 creates the state (graph 1), step 2 compiles the step (graph 2)
MAX_GRAPHS = 2
RTOL = 1e-6

PATHS: dict[str, list[dict]] = {
    "adamx": [dict(foreach=False), dict(foreach=True), dict(fused=True), dict(capturable=True)],
    "adax": [dict(foreach=False), dict(foreach=True), dict(fused=True), dict(capturable=True)],
    "lion": [dict(foreach=False), dict(foreach=True)],
    "sophiag": [dict(foreach=False), dict(foreach=True)],
}
MAKERS: dict[str, Callable[[list[dict]], torch.optim.Optimizer]] = {
    "adamx": lambda g: adamx.AdamX(g, lr=1e-2),
    "adax": lambda g: adamx.AdaX(g, lr=1e-2),
    "lion": lambda g: adamx.Lion(g, lr=1e-3),
    "sophiag": lambda g: adamx.SophiaG(g, lr=1e-2, bs=4),
}
SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], object]] = {
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1.0 + 0.1 * s)),
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=2e-2, total_steps=STEPS + 1),
    "onecycle-no-momentum": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=2e-2, total_steps=STEPS + 1, cycle_momentum=False
    ),
    "cyclic": lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=1e-3, max_lr=1e-2, step_size_up=5, base_momentum=0.8, max_momentum=0.95
    ),
    "plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=2),
}
WEIGHT_DECAYS = (0.0, 0.01)
SHAPES = [(3, 5)]


def _params(n_groups: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g).requires_grad_() for s in SHAPES] for _ in range(n_groups)]


def _combos(name: str, paths: list[dict] | None = None) -> list[tuple[dict, float]]:
    return [(kw, wd) for kw in (paths or PATHS[name]) for wd in WEIGHT_DECAYS]


def _groups(combos: list[tuple[dict, float]], params: list[list[torch.Tensor]]) -> list[dict]:
    return [{"params": ps, "weight_decay": wd, **kw} for ps, (kw, wd) in zip(params, combos)]


def _set_grads(params: list[list[torch.Tensor]], i: int) -> None:
    g = torch.Generator().manual_seed(1000 + i)
    for group in params:
        for p in group:
            p.grad = torch.randn(p.shape, generator=g)


def _sched_step(sched: object) -> None:
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(1.0)  # a flat metric: lr halves every patience + 1 steps
    else:
        sched.step()


def run_case(
    name: str, backend: str, scheduler: str, steps: int = STEPS, paths: list[dict] | None = None
) -> dict:
    """Eager and compiled runs of one optimizer (every path x weight decay as param groups) under one
    scheduler; returns graphs, graphs compiled after the warm-up, the max relative difference per path and
    how many distinct lrs and beta1s the scheduler produced (so the test knows they did change)."""
    return _run(name, backend, [(scheduler, steps)], paths)


def run_sequence(name: str, backend: str, steps_each: int = 8) -> dict:
    """``run_case`` with every scheduler in turn, ``steps_each`` steps under each, on one compiled step."""
    return _run(name, backend, [(scheduler, steps_each) for scheduler in SCHEDULERS])


def _run(name: str, backend: str, plan: list[tuple[str, int]], paths: list[dict] | None = None) -> dict:
    combos = _combos(name, paths)
    eager_p, comp_p = _params(len(combos)), _params(len(combos))
    eager, comp = MAKERS[name](_groups(combos, eager_p)), MAKERS[name](_groups(combos, comp_p))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    step = torch.compile(comp.step, backend=counter)
    lrs, beta1s, after_warmup, i = set(), set(), 0, 0
    for scheduler, steps in plan:
        with warnings.catch_warnings():  # a later scheduler wraps opt.step after it was compiled: harmless
            warnings.simplefilter("ignore", UserWarning)
            scheds = [SCHEDULERS[scheduler](o) for o in (eager, comp)]
        for _ in range(steps):
            _set_grads(eager_p, i)
            _set_grads(comp_p, i)
            lrs.add(comp.param_groups[0]["lr"])
            beta1s.add(comp.param_groups[0]["betas"][0])
            eager.step()
            before = counter.frame_count
            step()
            if i >= WARMUP:
                after_warmup += counter.frame_count - before
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for s in scheds:
                    _sched_step(s)
            i += 1
    diffs = {}
    for (kw, wd), ge, gc in zip(combos, eager_p, comp_p):
        path = "-".join(f"{key}={v}" for key, v in {**kw, "weight_decay": wd}.items())
        diffs[path] = max(
            ((e.double() - c.double()).abs().max() / e.double().abs().max()).item() for e, c in zip(ge, gc)
        )
    return dict(
        graphs=counter.frame_count,
        after_warmup=after_warmup,
        max_rel=max(diffs.values()),
        diffs=diffs,
        lrs=len(lrs),
        beta1s=len(beta1s),
    )


def _check(result: dict, scheduler: str) -> None:
    assert result["lrs"] > 2, "the scheduler did not change lr: the case tests nothing"
    if scheduler in ("onecycle", "cyclic"):
        assert result["beta1s"] > 2, "the scheduler did not cycle beta1"
    assert result["graphs"] <= MAX_GRAPHS, f"{result['graphs']} graphs in {STEPS} steps"
    assert result["after_warmup"] == 0, f"{result['after_warmup']} graphs compiled after step {WARMUP}"
    worst = max(result["diffs"], key=result["diffs"].get)
    assert result["max_rel"] <= RTOL, f"{worst} differs from eager by {result['max_rel']:.2e} relative"


FAST = [
    ("adamx", "eager", "onecycle"),
    ("adamx", "aot_eager", "lambda"),
    ("adax", "aot_eager", "onecycle-no-momentum"),
    ("lion", "aot_eager", "cyclic"),
    ("sophiag", "aot_eager", "plateau"),
]


@pytest.mark.parametrize("name,backend,scheduler", FAST, ids=["-".join(c) for c in FAST])
@pytest.mark.heavy
def test_compiled_step_settles_and_matches_eager(name, backend, scheduler) -> None:
    _check(run_case(name, backend, scheduler), scheduler)


PER_RUN = [("eager", name, scheduler) for name in ("lion", "sophiag") for scheduler in SCHEDULERS]
PER_RUN = [c for c in PER_RUN if (c[1], c[0], c[2]) not in FAST]


@pytest.mark.slow
@pytest.mark.parametrize("backend,name,scheduler", PER_RUN, ids=["-".join(c) for c in PER_RUN])
def test_compile_matrix_one_scheduler_per_run(backend, name, scheduler) -> None:
    """Lion and SophiaG are cheap enough to run each scheduler on its own (AdamX/AdaX: 4-14 s a run here)."""
    _check(run_case(name, backend, scheduler), scheduler)


SEQUENCES = [(backend, name) for backend in ("eager", "aot_eager", "inductor") for name in PATHS]


@pytest.mark.slow
@pytest.mark.parametrize("backend,name", SEQUENCES, ids=["-".join(c) for c in SEQUENCES])
def test_compile_matrix_every_scheduler_in_turn(backend, name) -> None:
    _check(run_sequence(name, backend), "cyclic")


def _subprocess_case(cache_dir: str, name: str, scheduler: str) -> dict:
    code = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from tests.adamx.test_compile_matrix import run_case\n"
        f"r = run_case({name!r}, 'inductor', {scheduler!r}, steps=12, paths=[dict(foreach=True)])\n"
        "from torch._dynamo.utils import counters\n"
        "r['fxgraph_cache_hit'] = counters['inductor']['fxgraph_cache_hit']\n"
        "print('RESULT ' + json.dumps(r))\n"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
def test_inductor_cold_then_warm_cache(tmp_path) -> None:
    """A fresh TORCHINDUCTOR_CACHE_DIR (cold: the guard that failed 'on the same frame it was created' did so
    here), then a second process reusing it (warm: the run that drifted by 3.8e-4): AdamX foreach, weight decay
    0 and 0.01, OneCycleLR with cycle_momentum (one path keeps the cold compile near a minute on 2 cores)."""
    cache = str(tmp_path / "inductor-cache")
    cold = _subprocess_case(cache, "adamx", "onecycle")
    warm = _subprocess_case(cache, "adamx", "onecycle")
    assert cold["fxgraph_cache_hit"] == 0
    assert warm["fxgraph_cache_hit"] > 0, "the second process did not reuse the cache"
    for result in (cold, warm):
        assert result["graphs"] <= MAX_GRAPHS and result["after_warmup"] == 0
        assert result["max_rel"] <= RTOL, result["diffs"]


def test_the_compiled_steps_python_run_eagerly_matches_the_eager_step(monkeypatch) -> None:
    """The branch ``step`` takes under torch.compile (hyperparameters as one float64 tensor per group, the
    on-device scalars), run as plain Python: Dynamo traces it, so only this run executes its lines. With weight
    decay 0 and 0.01 on every path, 5 steps equal the eager step's within float32 rounding."""
    combos = _combos("adamx")
    eager_p, comp_p = _params(len(combos)), _params(len(combos))
    eager, comp = MAKERS["adamx"](_groups(combos, eager_p)), MAKERS["adamx"](_groups(combos, comp_p))
    module = sys.modules[type(comp).__module__]
    for i in range(5):
        _set_grads(eager_p, i)
        _set_grads(comp_p, i)
        eager.step()
        with monkeypatch.context() as patch:
            patch.setattr(module, "compiling", lambda: True)
            comp.step()
    for (kw, wd), ge, gc, g0 in zip(combos, eager_p, comp_p, _params(len(combos))):
        for e, c, start in zip(ge, gc, g0):
            assert not torch.equal(c, start), f"{kw}, weight_decay={wd}: the compiled branch did not step"
            torch.testing.assert_close(c, e, rtol=RTOL, atol=1e-7, msg=f"{kw}, weight_decay={wd}")
