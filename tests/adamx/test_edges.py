"""Edges where torch's optimizers behave (issue 23, item 8), each with torch's behaviour or one sentence:
a non-parameter entry in ``opt.state``, a refused step, ``maximize=True``, ZeroRedundancyOptimizer's
consolidate/load of the fused path's state (2 gloo ranks)."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import adamx

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = {
    "adamx-fused": lambda p: adamx.AdamX(p, fused=True),
    "adamx-single": lambda p: adamx.AdamX(p, foreach=False),
    "adax-foreach": lambda p: adamx.AdaX(p, foreach=True),
    "lion": lambda p: adamx.Lion(p),
    "sophiag": lambda p: adamx.SophiaG(p, bs=4),
}


def _params(n: int = 2) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2)) for _ in range(n)]


def _step(opt, params, seed: int = 0) -> None:
    torch.manual_seed(seed)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_state_dict_keeps_a_non_parameter_entry_as_torch_does(make) -> None:
    """torch's test_state_dict_pre_hook writes opt.state['test'] = 1 in a pre-hook; state_dict() keeps it."""
    params = _params()
    opt = make(params)
    _step(opt, params)

    def pre_hook(optimizer) -> None:
        optimizer.state["test"] = 1

    opt.register_state_dict_pre_hook(pre_hook)
    sd = opt.state_dict()
    assert sd["state"]["test"] == 1
    assert set(sd["state"]) == {0, 1, "test"}
    fresh = make(_params())
    fresh.load_state_dict(sd)
    assert fresh.state["test"] == 1


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
@pytest.mark.parametrize("bad", ["sparse", "complex"])
def test_a_refused_step_changes_no_state(make, bad) -> None:
    """A sparse gradient (or a complex parameter) in the second group: the step raises before the first
    group's parameters, moments or step counters change."""
    params = _params()
    if bad == "complex":
        params[1] = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.complex64))
    try:
        opt = make([{"params": [params[0]]}, {"params": [params[1]]}])
    except ValueError as refused:  # fused=True refuses a complex parameter up front
        assert "fused=True) runs torch's fused kernel, which has no torch.complex64" in str(refused)
        return
    if bad == "complex":  # the first step is refused too; give the first group its state alone
        params[0].grad = torch.randn_like(params[0])
        opt.param_groups[1]["params"][0].grad = None
        opt.step()
    else:
        _step(opt, params)  # state exists
    before_p = params[0].detach().clone()
    before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[params[0]].items()}
    if bad == "sparse":
        params[0].grad = torch.randn_like(params[0])
        params[1].grad = torch.randn_like(params[1]).to_sparse()
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            opt.step()
    else:
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            _step(opt, params, seed=2)
    assert torch.equal(params[0].detach(), before_p)
    after = opt.state[params[0]]
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v, k


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_maximize_is_refused_with_a_sentence(make) -> None:
    with pytest.raises(ValueError, match=r"has no maximize option .* \(-objective\)\.backward\(\)"):
        make([{"params": _params(1), "maximize": True}])
    opt = make(_params(1))
    with pytest.raises(ValueError, match="has no maximize option"):
        opt.add_param_group({"params": _params(1), "maximize": True})
    assert len(opt.param_groups) == 1
    make([{"params": _params(1), "maximize": False}])  # False is what every adamx optimizer does


# ---- ZeroRedundancyOptimizer: consolidate, load, continue bit-identically ----------------------------------

ZERO_STEPS, ZERO_RESUME_AT = 8, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zero_worker(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:

        def make(params):
            return ZeroRedundancyOptimizer(params, optimizer_class=adamx.AdamX, fused=True, lr=1e-2)

        def run(params, opt, start, stop):
            for i in range(start, stop):
                g = torch.Generator().manual_seed(100 + i)
                for p in params:
                    p.grad = torch.randn(p.shape, generator=g)
                opt.step()

        torch.manual_seed(0)
        ref = [torch.nn.Parameter(torch.randn(5, 4)) for _ in range(4)]
        res = [torch.nn.Parameter(p.detach().clone()) for p in ref]
        straight = make(ref)
        run(ref, straight, 0, ZERO_STEPS)

        first = make(res)
        run(res, first, 0, ZERO_RESUME_AT)
        first.consolidate_state_dict(to=0)
        sd = first.state_dict() if rank == 0 else None
        box = [sd]
        dist.broadcast_object_list(box, src=0)
        snapshot = [p.detach().clone() for p in res]
        resumed_p = [torch.nn.Parameter(p) for p in snapshot]
        resumed = make(resumed_p)
        resumed.load_state_dict(box[0])
        run(resumed_p, resumed, ZERO_RESUME_AT, ZERO_STEPS)
        stale = sorted({k for st in resumed.optim.state.values() for k in st if k.startswith("fused_")})
        same = all(torch.equal(a, b) for a, b in zip(ref, resumed_p))
        diff = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(ref, resumed_p))
        torch.save({"same": same, "diff": diff, "stale": stale}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_zero_consolidate_and_load_continue_the_fused_path_bit_identically() -> None:
    """Two gloo ranks (as torch's own ZeRO tests): a run consolidated and reloaded after 4 of 8 steps ends
    bit-identical to the run that never stopped, and the live state keeps no exported ``fused_*`` entries."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_zero_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        results = [torch.load(f"{out}/rank{r}.pt") for r in range(2)]
    for r, res in enumerate(results):
        assert res["stale"] == [], f"rank {r}: exported entries left in the live state: {res['stale']}"
        assert res["same"], f"rank {r}: the resumed run differs by {res['diff']:.2e} relative"
