"""Environment, optimizer precision against float64, fused step speed, and fp16 GradScaler skipping."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import time

import torch

import adamx
from tools.acceptance.runner import Context, Row, grade


def timed(ctx: Context, fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times = []
    for _ in range(repeats):
        if ctx.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def check_environment(ctx: Context) -> list[Row]:
    def version(name: str, module: str | None = None) -> str:
        """The installed version, or "absent" when it is not installed or cannot be imported here."""
        try:
            if importlib.util.find_spec(module or name) is None:
                return "absent"
            return importlib.metadata.version(name)
        except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
            return "absent"

    numbers = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "omegaconf": version("omegaconf"),
        "hydra": version("hydra-core", "hydra"),
        "pycocotools": version("pycocotools"),
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        numbers.update(
            device=props.name,
            cuda=torch.version.cuda,
            sms=props.multi_processor_count,
            mem_gib=round(props.total_memory / 2**30, 1),
            gpus=torch.cuda.device_count(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    else:
        numbers.update(device=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    n = 256 if ctx.tiny else 8192
    a = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    seconds = timed(ctx, lambda: a @ b, repeats=3 if ctx.tiny else 10, warmup=1 if ctx.tiny else 3)
    numbers["bf16_matmul_tflops"] = round(2 * n**3 / seconds / 1e12, 2 if not ctx.tiny else 4)
    return [Row("env", "INFO", numbers), _trainer_imports(numbers)]


def _trainer_imports(numbers: dict) -> Row:
    """Whether the Trainer and the tasks import here (they need none of hydra, omegaconf and pycocotools;
    the harness's ``run.py`` needs the first two, and ``task.coco_metrics`` the third)."""
    import importlib

    absent = [k for k in ("omegaconf", "hydra", "pycocotools") if numbers[k] == "absent"]
    try:
        for module in ("experiments.train.trainer", "experiments.tasks", "models"):
            importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - reported as the row
        first = (str(error).strip().splitlines() or [""])[0][:160]
        return Row("env.trainer_imports", "FAIL", {"absent": absent}, f"{type(error).__name__}: {first}")
    note = (
        "the Trainer and tasks need none of the absent (run.py needs hydra and omegaconf, "
        "task.coco_metrics pycocotools)"
        if absent
        else "hydra, omegaconf and pycocotools present"
    )
    return Row("env.trainer_imports", "PASS", {"absent": absent}, note)


# ------------------------------------------------------------------ optimizer precision

PATHS = {  # optimizer name -> the paths it has
    "adamx": ("single", "foreach", "fused"),
    "adam": ("single", "foreach", "fused"),
    "adam+adafactor": ("single", "foreach", "fused"),
    "adam+adax": ("single", "foreach", "fused"),
    "adax": ("default",),
    "lion": ("single", "foreach"),
    "sophiag": ("single", "foreach"),
    "radam": ("default",),
    "sgd": ("default",),
}
PATH_KWARGS = {
    "single": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "default": {},
}
LR = {"sgd": 1e-2, "lion": 1e-4, "sophiag": 1e-3}


def _shapes(tiny: bool) -> list[tuple[int, ...]]:
    return [(16, 8), (33,), (4, 3, 3, 3)] if tiny else [(512, 256), (1000,), (64, 32, 3, 3), (256, 1024)]


def _run(
    name: str, path: str, dtype: torch.dtype, ctx: Context, steps: list[int]
) -> dict[int, list[torch.Tensor]]:
    """Params after each step in ``steps`` of optimizer ``name`` on ``path`` with reproducible gradients."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).to(ctx.device, dtype).requires_grad_() for s in _shapes(ctx.tiny)]
    hp = dict(PATH_KWARGS[path]) if path != "default" else {}
    if name in LR:
        hp["lr"] = LR[name]
    opt = adamx.create_optimizer(name, params, **hp)
    snapshots = {}
    gen = torch.Generator(device=ctx.device)
    for t in range(1, max(steps) + 1):
        for i, p in enumerate(params):  # float32 draws on the device, the same for both dtypes
            gen.manual_seed(1000 * t + i)
            grad = torch.randn(p.shape, generator=gen, device=ctx.device) * (1 + 0.5 * i)
            p.grad = grad.to(dtype)
        if name == "sophiag" and t % 10 == 1:
            opt.update_hessian()
        opt.step()
        if t in steps:
            snapshots[t] = [p.detach().clone() for p in params]
    return snapshots


def check_optimizer_precision(ctx: Context) -> list[Row]:
    """Each optimizer path in float32 against the same optimizer in float64 (single-tensor path), early
    (step 10) and late in a run; error = mean |p32 - p64| / mean |p64 - p_init|."""
    early, late = 10, 60 if ctx.tiny else 1000
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=g).to(ctx.device, torch.float64) for s in _shapes(ctx.tiny)]
    rows = []
    for name, paths in PATHS.items():
        ref_path = "default" if paths == ("default",) else "single"
        reference = _run(name, ref_path, torch.float64, ctx, [early, late])
        for path in paths:
            if path == "fused" and not ctx.cuda and not _cpu_fused_ok():
                rows.append(Row(f"optim.{name}.{path}", "SKIP", note="fused needs CUDA here"))
                continue
            got = _run(name, path, torch.float32, ctx, [early, late])
            numbers = {}
            for label, t in (("early", early), ("late", late)):
                err = sum((a.double() - b).abs().sum() for a, b in zip(got[t], reference[t]))
                moved = sum((b - p0).abs().sum() for b, p0 in zip(reference[t], init))
                numbers[f"err_{label}@{t}"] = float(err / moved)
            worst = max(numbers.values())
            rows.append(
                Row(f"optim.{name}.{path}", grade(worst, 1e-3, 1e-2, higher_is_better=False), numbers)
            )
    return rows


def _cpu_fused_ok() -> bool:
    try:
        p = torch.zeros(2, requires_grad=True)
        p.grad = torch.ones(2)
        torch.optim.AdamW([p], fused=True).step()
        return True
    except RuntimeError:
        return False


# ------------------------------------------------------------------ fused step speed


def check_fused_speed(ctx: Context) -> list[Row]:
    """AdamX fused vs torch fused AdamW: step time and GB/s (7 x 4 bytes per param: read p, g, m, v;
    write p, m, v), against a device-to-device copy's GB/s. Target: AdamX >= 0.9x torch's GB/s."""
    n_tensors, numel = (8, 4096) if ctx.tiny else (100, 500_000)
    g = torch.Generator().manual_seed(0)
    shapes = [numel + 97 * i for i in range(n_tensors)]
    total = sum(shapes)

    def make():
        ps = [torch.randn(s, generator=g).to(ctx.device).requires_grad_() for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p)
        return ps

    results = {}
    for label, build in (
        ("torch_adamw_fused", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
        ("adamx_fused", lambda ps: adamx.AdamX(ps, lr=1e-3, fused=True)),
    ):
        if not ctx.cuda and not _cpu_fused_ok():
            return [Row("speed.fused_step", "SKIP", note="fused needs CUDA here")]
        opt = build(make())
        seconds = timed(ctx, opt.step, repeats=5 if ctx.tiny else 30, warmup=3)
        results[label] = seconds
    src = torch.randn(total, device=ctx.device)
    dst = torch.empty_like(src)
    copy_s = timed(ctx, lambda: dst.copy_(src), repeats=5 if ctx.tiny else 30)
    gbs = {k: 28 * total / v / 1e9 for k, v in results.items()}
    copy_gbs = 8 * total / copy_s / 1e9
    ratio = gbs["adamx_fused"] / gbs["torch_adamw_fused"]
    numbers = {
        "params": total,
        "adamx_ms": results["adamx_fused"] * 1e3,
        "torch_ms": results["torch_adamw_fused"] * 1e3,
        "adamx_GBps": gbs["adamx_fused"],
        "torch_GBps": gbs["torch_adamw_fused"],
        "copy_GBps": copy_gbs,
        "adamx_vs_torch": ratio,
        "adamx_vs_copy": gbs["adamx_fused"] / copy_gbs,
    }
    status = grade(ratio, 0.9, 0.75) if ctx.cuda else "INFO"
    return [
        Row(
            "speed.fused_step",
            status,
            numbers,
            "target adamx_vs_torch >= 0.9" if ctx.cuda else "CPU: not graded",
        )
    ]


# ------------------------------------------------------------------ fp16 GradScaler


def check_fp16_skip(ctx: Context, optimizer_class: type = adamx.AdamX) -> list[Row]:
    """fp16 autocast + GradScaler: a step whose gradient holds an inf is skipped (every parameter and every
    optimizer state entry, step counters included, untouched; the scale halved); the next finite step
    updates. On AdamX's default and fused paths (``optimizer_class`` lets a test plant a wrong step)."""
    return [
        _fp16_skip(ctx, path, kwargs, optimizer_class)
        for path, kwargs in (("default", {}), ("fused", {"fused": True}))
    ]


def _state_copy(opt: torch.optim.Optimizer, params: list) -> dict:
    """Every state entry of every parameter, by (parameter index, key), as copies (tensors cloned, so
    that an in-place update afterwards shows)."""
    return {
        (i, k): v.detach().clone() if torch.is_tensor(v) else v
        for i, p in enumerate(params)
        for k, v in opt.state[p].items()
    }


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if torch.is_tensor(x) != torch.is_tensor(y):
            return False
        if torch.is_tensor(x) and not (x.shape == y.shape and torch.equal(x.cpu(), y.cpu())):
            return False
        if not torch.is_tensor(x) and x != y:
            return False
    return True


def _fp16_skip(ctx: Context, path: str, kwargs: dict, optimizer_class: type) -> Row:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to(
        ctx.device
    )
    params = list(model.parameters())
    opt = optimizer_class(params, lr=1e-2, **kwargs)
    scaler = torch.amp.GradScaler(ctx.device.type, init_scale=1024.0)
    x, y = torch.randn(8, 16, device=ctx.device), torch.randint(0, 4, (8,), device=ctx.device)

    def step(poison: bool) -> None:
        with torch.autocast(ctx.device.type, dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if poison:
            model[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step(False)
    weights = [p.detach().clone() for p in params]
    state = _state_copy(opt, params)
    scale = scaler.get_scale()
    step(True)
    same_params = all(torch.equal(a, b) for a, b in zip(weights, params))
    same_state = _same(state, _state_copy(opt, params))
    halved = scaler.get_scale() == scale / 2
    step(False)
    moved = not all(torch.equal(a, b) for a, b in zip(weights, params))
    ok = same_params and same_state and halved and moved
    numbers = {
        "params_untouched": same_params,
        "state_untouched": same_state,
        "scale_halved": halved,
        "next_step_updates": moved,
    }
    return Row(f"amp.fp16_inf_step_skipped.{path}", "PASS" if ok else "FAIL", numbers)
