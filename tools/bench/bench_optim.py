"""Median optimizer step time of AdamX on each path against torch's AdamW, printed as a Markdown table.

Workloads: (a) 25M float32 parameters in 50 tensors; (b) the parameter list of the CIFAR EfficientNetV2-M
(torchvision efficientnet_v2_m(num_classes=100), ~53M parameters in ~700 tensors; shapes only, nothing
trained). ``--scale 0.1`` shrinks both for a quick run. Also timed: a single-tensor AdamX written the way the
authors' code does it (Python-float beta_hat, mul_/add_ moments). On CUDA the table adds achieved GB/s
(7 float streams per element: read param, grad, m, v; write param, m, v) against a device-to-device copy.

    python tools/bench/bench_optim.py                 # full size on CPU
    python tools/bench/bench_optim.py --scale 0.1 --steps 5
    python tools/bench/bench_optim.py --device cuda --dtype bfloat16
    python tools/bench/bench_optim.py --compile --only "torch AdamW fused,AdamX fused,AdamX compiled" --steps 5

``--compile`` adds ``torch.compile(opt.step)`` rows (inductor) for AdamX and torch's AdamW; their first
call includes the compile time.

``--host-time`` measures instead the host time per step of the fused path against torch's fused AdamW
(issue 23): 100 and 650 tensors of 16 elements (the kernels are then negligible, as on a launch-bound GPU),
interleaved rounds, and prints the median over rounds of the per-round ratio (target <= 1.1):

    python -m tools.bench.bench_optim --host-time --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import adamx


def workload_a(scale: float) -> list[tuple[int, ...]]:
    n = int(500_000 * scale)
    return [(n,)] * 50


def workload_b(scale: float) -> list[tuple[int, ...]]:
    try:
        from torchvision.models import efficientnet_v2_m
    except ImportError:  # pragma: no cover - torchvision is a harness dependency
        raise SystemExit("workload (b) needs torchvision (pip install '.[harness]').") from None
    with torch.device("meta"):
        model = efficientnet_v2_m(num_classes=100)
    shapes = [tuple(p.shape) for p in model.parameters()]
    if scale == 1.0:
        return shapes
    return [(max(1, int(torch.Size(s).numel() * scale)),) for s in shapes]


class AuthorsStyleAdamX(torch.optim.Optimizer):
    """AdamX as a plain per-parameter loop (Python-float beta_hat, mul_/add_ moment updates): the baseline."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                b1 = (beta1 - beta1**t) / (1 - beta1**t)
                b2 = (1 - beta2 ** ((1 - beta2) * (t - 1))) / (1 - beta2 ** ((1 - beta2) * t))
                state["exp_avg"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.addcdiv_(
                    state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-group["lr"]
                )


OPTIMIZERS: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "torch AdamW foreach": lambda p: torch.optim.AdamW(p, foreach=True),
    "torch AdamW fused": lambda p: torch.optim.AdamW(p, fused=True),
    "AdamX single": lambda p: adamx.AdamX(p, foreach=False),
    "AdamX foreach": lambda p: adamx.AdamX(p, foreach=True),
    "AdamX fused": lambda p: adamx.AdamX(p, fused=True),
    "AdamX authors-style loop": lambda p: AuthorsStyleAdamX(p),
}


class Compiled:
    """An optimizer whose ``step`` is ``torch.compile(opt.step)`` (inductor); the first call compiles."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        self.step = torch.compile(opt.step)


COMPILED: dict[str, Callable[[list[torch.Tensor]], Compiled]] = {
    "torch AdamW compiled": lambda p: Compiled(torch.optim.AdamW(p, foreach=True)),
    "AdamX compiled": lambda p: Compiled(adamx.AdamX(p, foreach=True)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_optimizers(
    makers, shapes, device, dtype, steps: int, warmup: int
) -> dict[str, tuple[float, float, float]]:
    """name -> (first-call seconds, second-call seconds, median seconds per later step). A compiled step
    compiles twice: on the first call (state creation) and on the second (the steady step). The optimizers
    step round-robin, so load from other processes on a shared machine hits all of them alike."""
    runs = {}
    for name, make in makers.items():
        params = [torch.randn(s, device=device, dtype=dtype, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        runs[name] = make(params)
    first, second, times = {}, {}, {name: [] for name in makers}
    for i in range(1 + warmup + steps):
        for name, opt in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            opt.step()
            _sync(device)
            elapsed = time.perf_counter() - t0
            if i == 0:
                first[name] = elapsed
            elif i == 1:
                second[name] = elapsed
            elif i > warmup:
                times[name].append(elapsed)
    return {name: (first[name], second[name], statistics.median(times[name])) for name in makers}


def copy_bandwidth(numel: int, device: torch.device, dtype: torch.dtype) -> float:
    src = torch.randn(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * numel * src.element_size() / statistics.median(times) / 1e9


HOST_TIME = {
    "torch AdamW fused": lambda p: torch.optim.AdamW(p, fused=True),
    "AdamX fused": lambda p: adamx.AdamX(p, fused=True),
    "AdaX fused": lambda p: adamx.AdaX(p, fused=True),
}


def host_time_ratios(
    n_tensors: int, rounds: int, steps: int, numel: int = 16
) -> dict[str, tuple[float, float]]:
    """name -> (median seconds per step, median over rounds of its ratio to torch's fused AdamW). Each round
    runs ``steps`` steps of every optimizer in turn, so load from other processes hits all of them alike."""
    opts = {}
    for name, make in HOST_TIME.items():
        params = [torch.randn(numel, requires_grad=True) for _ in range(n_tensors)]
        for p in params:
            p.grad = torch.randn_like(p)
        opts[name] = make(params)
        opts[name].step()  # state creation is not timed
    per_step = {name: [] for name in opts}
    ratios = {name: [] for name in opts}
    for _ in range(rounds):
        times = {}
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name] = (time.perf_counter() - t0) / steps
            per_step[name].append(times[name])
        for name in opts:
            ratios[name].append(times[name] / times["torch AdamW fused"])
    return {name: (statistics.median(per_step[name]), statistics.median(ratios[name])) for name in opts}


def main_host_time(rounds: int, steps: int) -> None:
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}"
    )
    print(
        f"host time per step on CPU, 16-element tensors, median of {rounds} interleaved rounds of {steps} steps\n"
    )
    print("| tensors | optimizer | us per step | vs torch fused AdamW |")
    print("|---|---|---|---|")
    for n in (100, 650):
        for name, (sec, ratio) in host_time_ratios(n, rounds, steps).items():
            print(f"| {n} | {name} | {sec * 1e6:.0f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="shrink both workloads (0.1: ten times smaller)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per optimizer (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first call (>= 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--workloads", default="a,b", help="comma list of a, b")
    parser.add_argument("--only", default="", help="comma list of optimizer names to run (default: all)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile(opt.step) rows (inductor)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads (0: torch's default); on a "
        "shared box 1 avoids thread-pool stalls that swamp the timings",
    )
    parser.add_argument(
        "--host-time", action="store_true", help="fused host time per step vs torch's fused AdamW (issue 23)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="--host-time: interleaved rounds")
    args = parser.parse_args()
    args.warmup = max(args.warmup, 1)  # the second call is reported on its own
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.host_time:
        main_host_time(args.rounds, args.steps)
        return
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}"
    )
    if device.type == "cuda":
        print(f"device {torch.cuda.get_device_name(device)}")
    print(f"dtype {args.dtype}, {args.steps} timed steps after {args.warmup} warm-up, median ms per step\n")
    makers = {**OPTIMIZERS, **(COMPILED if args.compile else {})}
    names = [n for n in makers if not args.only or n in args.only.split(",")]
    for wl in args.workloads.split(","):
        shapes = workload_a(args.scale) if wl == "a" else workload_b(args.scale)
        numel = sum(torch.Size(s).numel() for s in shapes)
        print(f"### ({wl}) {numel / 1e6:.1f}M parameters in {len(shapes)} tensors\n")
        results = time_optimizers(
            {n: makers[n] for n in names}, shapes, device, dtype, args.steps, args.warmup
        )
        bw = copy_bandwidth(numel, device, dtype) if device.type == "cuda" else None
        header = "| optimizer | 1st call (ms) | 2nd call (ms) | median step (ms) | vs torch fused | vs torch foreach |"
        print(header + (" GB/s | of copy BW |" if bw else ""))
        print("|---" * (6 + (2 if bw else 0)) + "|")
        fused = results.get("torch AdamW fused", (0, 0, float("nan")))[2]
        foreach = results.get("torch AdamW foreach", (0, 0, float("nan")))[2]

        def ratio(med: float, base: float) -> str:
            return f"{med / base:.2f}x" if base == base else "—"  # NaN: that baseline was not run

        for name, (first, second, med) in results.items():
            row = (
                f"| {name} | {first * 1e3:.1f} | {second * 1e3:.1f} | {med * 1e3:.2f} | {ratio(med, fused)} "
                f"| {ratio(med, foreach)} |"
            )
            if bw:
                gbs = 7 * numel * torch.empty((), dtype=dtype).element_size() / med / 1e9
                row += f" {gbs:.0f} | {gbs / bw:.0%} |"
            print(row)
        if bw:
            print(f"\ndevice-to-device copy: {bw:.0f} GB/s")
        print()


if __name__ == "__main__":
    main()
