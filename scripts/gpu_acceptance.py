"""GPU acceptance: one run that says whether this code is correct and fast on the device it runs on.

From the repository root (no install needed; the device image has no .pth for the checkout):

    set -o pipefail; python -m scripts.gpu_acceptance --out acceptance.json 2>&1 | tee acceptance.log
    python -m scripts.gpu_acceptance --device cpu --tiny      # the same code paths on the CPU, < 1 minute

Prints a table of named checks (PASS / WARN / FAIL / SKIP / INFO, with their numbers) and, with
``--out``, writes it as JSON, rewritten after every check group. Each check group runs in its own
process (tools/acceptance/isolate.py): a check that raises is one FAIL row with the exception's first
line; one whose process dies (a sticky CUDA error, a crash) is one FAIL row naming how it died; either
way the other groups still run. ``--deadline-s`` caps the run: groups not started by then are SKIP, and
the one running then is killed (WARN), so the script ends within ``--deadline-s`` + 10 s. Exit status 1
when any row FAILs, 0 otherwise. Synthetic data shaped like each task's (CIFAR 32x32, VOC 320x320 with
boxes, SBD 320x320 masks): no data set, and none of hydra, omegaconf or pycocotools is needed.
docs/benchmarks.md ("GPU acceptance") lists every row and what it means.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from tools.acceptance.isolate import Group, run_group
from tools.acceptance.runner import Row, table, write_json

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts

CHECKS = [  # order matters: data compares with the models' img/s; optional models go last
    Group("env", "tools.acceptance.env_optim:check_environment"),
    Group("amp", "tools.acceptance.env_optim:check_fp16_skip"),
    Group("optim", "tools.acceptance.env_optim:check_optimizer_precision"),
    Group("speed", "tools.acceptance.env_optim:check_fused_speed"),
    Group("determinism", "tools.acceptance.training:check_deterministic_steps"),
    Group("loss", "tools.acceptance.vs_cpu:check_losses_vs_cpu"),
    Group("trainer", "tools.acceptance.training:check_resume"),
    Group("ddp", "tools.acceptance.data_ddp:check_ddp"),
    "models",  # one group per model of synthetic.specs(), the optional ones after "data"
    Group("data", "tools.acceptance.data_ddp:check_cifar_loader"),
    "optional models",
]


def expand(checks: list, tiny: bool) -> list[Group]:
    """The groups to run, in order, with the models placeholders filled from ``synthetic.specs``."""
    from tools.acceptance.synthetic import specs

    out = []
    for entry in checks:
        if isinstance(entry, Group):
            out.append(entry)
            continue
        optional = entry == "optional models"
        out += [
            Group(f"model.{s.model}", "tools.acceptance.training:model_check", arg=s.model)
            for s in specs(tiny)
            if s.optional == optional
        ]
    return out


def selected(name: str, only: list[str], skip: list[str]) -> bool:
    return (not only or any(name.startswith(o) for o in only)) and not any(name.startswith(s) for s in skip)


def shared_from(rows: list[Row]) -> dict:
    """What later groups read from earlier ones: the models' Trainer img/s (for the data check)."""
    img_s = {
        r.name.split(".", 1)[1]: r.numbers["trainer_img_s"]
        for r in rows
        if r.name.startswith("model.") and "trainer_img_s" in r.numbers
    }
    return {"model_img_s": img_s} if img_s else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--tiny", action="store_true", help="toy models, shapes and steps (CI, CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON here (after every group)")
    parser.add_argument("--only", nargs="*", default=[], help="run only checks whose name starts so")
    parser.add_argument("--skip", nargs="*", default=[], help="skip checks whose name starts so")
    parser.add_argument(
        "--compile",
        default=None,
        help="comma-separated models to torch.compile (default: unet on CUDA, none on CPU)",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=420.0,
        help="seconds after which no group starts and the running one is killed (default 420)",
    )
    args = parser.parse_args(argv)

    if args.deadline_s <= 0:
        parser.error(f"--deadline-s {args.deadline_s}: give a positive number of seconds, e.g. 420.")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu --tiny.")
    if args.device not in ("cuda", "cpu"):
        parser.error(f"--device {args.device!r}: choose auto, cuda or cpu.")
    default_compile = "unet" if args.device == "cuda" else ""
    compile_models = sorted(
        m for m in (args.compile if args.compile is not None else default_compile).split(",") if m
    )
    start, rows = time.perf_counter(), []
    deadline = start + args.deadline_s
    params = {"device": args.device, "tiny": args.tiny, "compile_models": compile_models}
    meta = {
        "device": args.device,
        "tiny": args.tiny,
        "argv": sys.argv[1:] if argv is None else argv,
        "isolation": "one process per check group",
    }

    def report(new: list[Row]) -> None:
        for row in new:
            print(f"[{time.perf_counter() - start:6.1f} s] {row.status:<4} {row.name}", flush=True)
        rows.extend(new)
        if args.out:  # after every group, so a run cut short still leaves its results
            write_json(rows, {**meta, "seconds": round(time.perf_counter() - start, 1)}, args.out)

    for group in expand(CHECKS, args.tiny):
        if not selected(group.name, args.only, args.skip):
            continue
        left = deadline - time.perf_counter()
        if left <= 0:
            report(
                [Row(group.name, "SKIP", note=f"not started: past --deadline-s; run it: --only {group.name}")]
            )
            continue
        outcome = run_group(group, {**params, "shared": shared_from(rows)}, timeout=left)
        if outcome.log.strip() and (outcome.killed or outcome.exitcode != 0):
            tail = outcome.log.strip().splitlines()[-30:]
            print("\n".join(f"  | {line}" for line in tail), file=sys.stderr, flush=True)
        report(outcome.rows)
    total = time.perf_counter() - start
    print()
    print(table(rows))
    print(f"total {total:.1f} s on {args.device} ({'tiny' if args.tiny else 'full'})")
    failed = [r.name for r in rows if r.status == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
