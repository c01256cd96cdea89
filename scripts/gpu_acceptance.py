"""GPU acceptance: one run that says whether this code is correct and fast on the device it runs on.

    python scripts/gpu_acceptance.py --out acceptance.json            # on a GPU, <= 8 minutes
    python scripts/gpu_acceptance.py --device cpu --tiny              # the same code paths, ~1 minute

Prints a table of named checks (PASS / WARN / FAIL / SKIP / INFO, with their numbers) and writes it
as JSON with ``--out``. Each check is isolated: one that raises prints FAIL with the exception's first
line and the rest still run. Exit status 1 when any check FAILs. Synthetic data shaped like each task's
(CIFAR 32x32, VOC 320x320 with boxes, SBD 320x320 masks); no data set, hydra or pycocotools needed
(the Trainer needs omegaconf: docs/benchmarks.md says how to carry it to a machine without it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tools.acceptance.runner import Context, run_check, table, write_json

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts

ROOT = Path(__file__).resolve().parents[1]


CHECKS = [  # (name prefix, "module:function"); order matters: data compares with the models' img/s
    ("env", "env_optim:check_environment"),
    ("amp", "env_optim:check_fp16_skip"),
    ("optim", "env_optim:check_optimizer_precision"),
    ("speed", "env_optim:check_fused_speed"),
    ("determinism", "training:check_deterministic_steps"),
    ("trainer", "training:check_resume"),
    ("ddp", "data_ddp:check_ddp"),
    ("model", "training:model_check"),  # one check per model of synthetic.specs()
    ("data", "data_ddp:check_cifar_loader"),
]


def expand(checks: list[tuple[str, str]], tiny: bool) -> list[tuple[str, Callable]]:
    """(name, function) per check; the model entry becomes one check per model."""
    from tools.acceptance.synthetic import specs

    out = []
    for name, target in checks:
        module, fn = target.split(":")
        found = getattr(importlib.import_module(f"tools.acceptance.{module}"), fn)
        if name == "model":
            out += [(f"model.{spec.model}", found(spec)) for spec in specs(tiny)]
        else:
            out.append((name, found))
    return out


def selected(name: str, only: list[str], skip: list[str]) -> bool:
    return (not only or any(name.startswith(o) for o in only)) and not any(name.startswith(s) for s in skip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--tiny", action="store_true", help="toy models, shapes and steps (CI, CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--only", nargs="*", default=[], help="run only checks whose name starts so")
    parser.add_argument("--skip", nargs="*", default=[], help="skip checks whose name starts so")
    parser.add_argument(
        "--compile",
        default=None,
        help="comma-separated models to torch.compile (default: unet on CUDA, none on CPU)",
    )
    parser.add_argument(
        "--deadline-s", type=float, default=420.0, help="seconds after which the remaining models are skipped"
    )
    args = parser.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu --tiny.")
    if args.device not in ("cuda", "cpu"):
        parser.error(f"--device {args.device!r}: choose auto, cuda or cpu.")
    default_compile = "unet" if args.device == "cuda" else ""
    compile_models = {
        m for m in (args.compile if args.compile is not None else default_compile).split(",") if m
    }
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    start, rows = time.perf_counter(), []
    ctx = Context(
        device=device, tiny=args.tiny, compile_models=compile_models, deadline=start + args.deadline_s
    )
    meta = {"device": str(device), "tiny": args.tiny, "argv": sys.argv[1:] if argv is None else argv}
    for name, check in expand(CHECKS, args.tiny):
        if not selected(name, args.only, args.skip):
            continue
        new = run_check(name, check, ctx)
        for row in new:
            print(f"[{time.perf_counter() - start:6.1f} s] {row.status:<4} {row.name}", flush=True)
        rows += new
        if args.out:  # after every check, so a run cut short still leaves its results
            write_json(rows, {**meta, "seconds": round(time.perf_counter() - start, 1)}, args.out)
    total = time.perf_counter() - start
    print()
    print(table(rows))
    print(f"total {total:.1f} s on {device} ({'tiny' if args.tiny else 'full'})")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
