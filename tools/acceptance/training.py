"""Training checks: one deterministic step per task, resume exactness, and each paper model's Trainer
throughput against a bare loop (bf16 + channels_last, compile where asked)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

import adamx
from tools.acceptance.runner import Context, Row, grade
from tools.acceptance.syncs import SyncCounter, cuda_sync_warnings
from tools.acceptance.synthetic import Spec, batch, specs, task_kwargs


def build(spec: Spec, device: torch.device, seed: int = 0):
    from experiments.tasks import build_task
    from models import build_model

    torch.manual_seed(seed)
    model = build_model(spec.model, num_classes=spec.num_classes, **spec.model_kwargs).to(device)
    return model, build_task(spec.task, **task_kwargs(spec))


def optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return adamx.AdamX(model.parameters(), lr=1e-4, fused=device.type == "cuda")


@contextlib.contextmanager
def deterministic(warn_only: bool = False) -> Iterator[None]:
    """use_deterministic_algorithms, cuDNN deterministic and no benchmark (so cuDNN cannot pick a
    nondeterministic algorithm) inside; the flags as they were after. ``warn_only``: an op without a
    deterministic implementation warns instead of raising (for checks whose subject is something else)."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[3])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


@contextlib.contextmanager
def count_syncs(ctx: Context) -> Iterator[list[int]]:
    """Yields a one-element list that holds the number of host syncs in the block once it ends: the CUDA
    runtime's own count on the GPU, the dispatch-mode emulation on the CPU."""
    out = [0]
    if ctx.cuda:
        with cuda_sync_warnings() as found:
            yield out
        out[0] = len(found)
    else:
        with SyncCounter(emulate_device=True) as counter:
            yield out
        out[0] = counter.total


class StepSyncs:
    """Host syncs inside the training steps of ``Trainer.fit()`` only, through the Trainer's
    ``on_step_end`` hook: the count between two consecutive steps of one epoch. What happens before an
    epoch's first step ends (a resume's host-to-device copies of every checkpoint tensor, the first
    batch's set-up) and after its last (the loss flush, evaluation, checkpoints) is left out.

    ``with StepSyncs(ctx) as steps: fit(hooks=Hooks(on_step_end=steps.hook))``, then ``steps.per_step``
    (one count per counted step) and ``steps.mean``. On CUDA the runtime's own count
    (``set_sync_debug_mode("warn")``), on the CPU the dispatch-mode emulation (``SyncCounter``).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.per_step: list[int] = []
        self._last: tuple[int, int] | None = None  # (epoch, count) at the last step's end
        self._stack = contextlib.ExitStack()
        self._found: list[str] | None = None
        self._counter: SyncCounter | None = None

    def __enter__(self) -> StepSyncs:
        if self.ctx.cuda:
            self._found = self._stack.enter_context(_live_sync_warnings())
        else:
            self._counter = self._stack.enter_context(SyncCounter(emulate_device=True))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def count(self) -> int:
        return len(self._found) if self._found is not None else self._counter.total

    def hook(self, trainer) -> None:
        now = (trainer.epoch, self.count())
        if self._last is not None and self._last[0] == now[0]:
            self.per_step.append(now[1] - self._last[1])
        self._last = now

    @property
    def mean(self) -> float:
        return sum(self.per_step) / len(self.per_step) if self.per_step else float("nan")


@contextlib.contextmanager
def _live_sync_warnings() -> Iterator[list]:
    """Like ``cuda_sync_warnings``, but the list fills while the block runs (every warning recorded;
    the sync-debug ones are the only warnings that mode adds)."""
    import warnings

    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield _SyncList(caught)
        finally:
            torch.cuda.set_sync_debug_mode(before)


class _SyncList:
    """A live view of the recorded warnings that are host synchronisations (``len`` only)."""

    def __init__(self, caught: list) -> None:
        self.caught, self._seen, self._n = caught, 0, 0

    def __len__(self) -> int:
        for w in self.caught[self._seen :]:
            self._n += "synchroniz" in str(w.message)
        self._seen = len(self.caught)
        return self._n


# ------------------------------------------------------------------ deterministic step per task


def check_deterministic_steps(ctx: Context) -> list[Row]:
    """One training step per task with use_deterministic_algorithms(True), twice from the same start:
    no op may refuse, and both runs must give bitwise-equal losses and gradients."""
    seen, rows = set(), []
    for spec in specs(ctx.tiny):
        if spec.task in seen:
            continue
        seen.add(spec.task)
        name = f"determinism.{spec.task}"
        try:
            with deterministic():
                results = []
                for _ in range(2):
                    model, task = build(spec, ctx.device)
                    with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
                        loss = task.loss(model, batch(spec, ctx.device))
                    loss.backward()
                    grads = torch.cat(
                        [p.grad.reshape(-1).float() for p in model.parameters() if p.grad is not None]
                    )
                    results.append((loss.detach().float(), grads))
            same = torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
            rows.append(Row(name, "PASS" if same else "FAIL", {"model": spec.model, "bitwise_equal": same}))
        except Exception as error:  # noqa: BLE001 - one task failing must not hide the others
            rows.append(
                Row(
                    name,
                    "FAIL",
                    {"model": spec.model},
                    f"{type(error).__name__}: {str(error).splitlines()[0][:160]}",
                )
            )
    return rows


# ------------------------------------------------------------------ Trainer helpers


def trainer_run(
    ctx: Context,
    spec: Spec,
    model,
    task,
    batches: list,
    run_dir: str,
    opt=None,
    on_step_end=None,
    **config: Any,
):
    """``Trainer.fit()`` over ``batches`` (one epoch each time through them); returns (trainer, summary)."""
    from experiments.train.collectives import DistInfo
    from experiments.train.loaders import EpochLoader
    from experiments.train.trainer import Hooks, Trainer, TrainerConfig

    cfg = {"epochs": 1, "device": ctx.device.type, "progress": False, "log_every": 20, **config}
    trainer = Trainer(
        task=task,
        model=model,
        optimizer=opt or optimizer(model, ctx.device),
        train_data=EpochLoader(batches, None, torch.Generator(), 0),
        eval_data=batches[:1],
        lr_factor=lambda step: 1.0,
        run_dir=run_dir,
        config=TrainerConfig(**cfg),
        dist=DistInfo(device=ctx.device),
        hooks=Hooks(on_step_end=on_step_end),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's per-epoch line
        summary = trainer.fit()
    return trainer, summary


# ------------------------------------------------------------------ resume


def check_resume(ctx: Context) -> list[Row]:
    """Two epochs straight vs one epoch, a new Trainer, and a resumed second epoch, all inside
    ``deterministic(warn_only=True)`` (cuDNN may otherwise pick nondeterministic algorithms):
    bitwise-equal parameters.
    RAdam (torch reads its step counters every step): host syncs per training step of the resumed epoch
    vs a fresh one, counted inside the steps only (``StepSyncs``), so the resume's host-to-device copy of
    every checkpoint tensor, blocking and so a sync each on CUDA, does not count as a per-step cost."""
    spec = specs(ctx.tiny)[0]
    steps = 4 if ctx.tiny else 20
    batches = [batch(spec, ctx.device, seed=i) for i in range(steps)]
    rows = []
    # warn_only: an op that refuses determinism is determinism.<task>'s finding; here the bitwise
    # comparison decides
    with tempfile.TemporaryDirectory() as tmp, deterministic(warn_only=True):

        def fresh(name: str, epochs: int, on_step_end=None):
            model, task = build(spec, ctx.device)
            opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
            return trainer_run(
                ctx, spec, model, task, batches, os.path.join(tmp, name), opt=opt, epochs=epochs,
                on_step_end=on_step_end,
            )  # fmt: skip

        straight, _ = fresh("straight", 2)
        fresh("resumed", 1)
        with StepSyncs(ctx) as after:
            resumed, _ = fresh("resumed", 2, after.hook)  # finds last.pt, trains epoch 2
        with StepSyncs(ctx) as before:
            fresh("first", 1, before.hook)  # the same steps without a resume
    equal = all(
        torch.equal(a, b)
        for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values())
    )
    rows.append(
        Row("trainer.resume_exact", "PASS" if equal else "FAIL", {"steps": 2 * steps, "bitwise_equal": equal})
    )
    extra = after.mean - before.mean
    status = grade(extra, 0.5, 2.0, higher_is_better=False) if after.per_step and before.per_step else "FAIL"
    rows.append(
        Row(
            "trainer.syncs_after_resume",
            status,
            {
                "syncs_per_step_resumed": after.mean,
                "syncs_per_step_fresh": before.mean,
                "steps_counted": len(after.per_step),
            },
            "RAdam; inside training steps only (steps 2..N of the epoch)"
            + ("" if ctx.cuda else "; CPU: emulated (host step counters left out)"),
        )
    )
    return rows


# ------------------------------------------------------------------ models: trainer vs bare loop


def bare_loop(ctx: Context, model, task, batches: list, compile_model: bool) -> dict[str, float]:
    """forward/loss/backward/step under bf16 autocast, channels_last: images/s, memory drift."""
    opt = optimizer(model, ctx.device)
    run = torch.compile(model) if compile_model else model
    warm = batches[: min(3, len(batches))]
    for b in warm:  # allocator, cuDNN autotuning and compile before the clock starts
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            task.loss(run, b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    ctx.sync()
    mem_at = {}
    start = time.perf_counter()
    for i, b in enumerate(batches):
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            loss = task.loss(run, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ctx.cuda and i in (9, len(batches) - 1):
            mem_at[i] = torch.cuda.memory_allocated(ctx.device)
    ctx.sync()
    seconds = time.perf_counter() - start
    out = {"img_s": sum(task.batch_size(b) for b in batches) / seconds}
    if len(mem_at) == 2:
        out["mem_drift_mib"] = (mem_at[len(batches) - 1] - mem_at[9]) / 2**20
    return out


def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001
        return 0


def model_check(model: str):
    """The check of one paper model (``gpu_acceptance.py`` runs one group per model, so that the JSON
    grows after each): bf16 + channels_last, Trainer img/s vs a bare loop (target >= 0.95x), host syncs
    per training step (counted inside the steps of a fit() of N/2 steps: ``StepSyncs``), peak memory,
    memory drift over the bare loop, graphs compiled after warm-up (recompiles). Both contenders warm up
    first (the Trainer with a 3-step fit() on the same model)."""

    def check(ctx: Context) -> list[Row]:
        name = f"model.{model}"
        (spec,) = [s for s in specs(ctx.tiny) if s.model == model]
        try:
            return [_one_model(ctx, spec, 3 if ctx.tiny else 100, name)]
        finally:
            if ctx.cuda:
                torch.cuda.empty_cache()

    return check


def _one_model(ctx: Context, spec: Spec, steps: int, name: str) -> Row:
    compile_model = spec.model in ctx.compile_models
    batches = [batch(spec, ctx.device, seed=i % 8, channels_last=True) for i in range(steps)]
    if compile_model:
        torch._dynamo.reset()
    model, task = build(spec, ctx.device)
    model.to(memory_format=torch.channels_last)
    bare = bare_loop(ctx, model, task, batches, compile_model)
    del model
    config = {"precision": "bf16", "channels_last": True, "compile": compile_model, "log_every": 20}
    half = batches[: max(2, steps // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        model, task = build(spec, ctx.device)
        # A short fit first, on the same model: compilation and first-step set-up stay off the clock.
        trainer_run(ctx, spec, model, task, batches[:3], os.path.join(tmp, "warm"), **config)
        graphs_before = _dynamo_graphs()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        _, summary = trainer_run(ctx, spec, model, task, batches, os.path.join(tmp, "a"), **config)
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
        with StepSyncs(ctx) as counted:
            trainer_run(
                ctx, spec, model, task, half, os.path.join(tmp, "b"), on_step_end=counted.hook, **config
            )
    trainer_img_s = float(summary["throughput_samples_per_s"])
    syncs = counted.mean  # nan (graded FAIL on CUDA) if no step was counted
    ratio = trainer_img_s / bare["img_s"]
    numbers = {
        "batch": spec.batch,
        "size": spec.size,
        "trainer_img_s": trainer_img_s,
        "bare_img_s": bare["img_s"],
        "ratio": ratio,
        "syncs_per_step": syncs,
    }
    if peak is not None:
        numbers["peak_gib"] = peak
    if "mem_drift_mib" in bare:
        numbers["mem_drift_mib"] = bare["mem_drift_mib"]
    if compile_model:
        numbers["new_graphs_after_warmup"] = _dynamo_graphs() - graphs_before
    ctx.shared.setdefault("model_img_s", {})[spec.model] = trainer_img_s
    limit = 5 if spec.task == "detection" else 2
    if not ctx.cuda:
        return Row(name, "INFO", numbers, f"CPU: not graded (targets: ratio >= 0.95, syncs <= {limit})")
    statuses = [grade(ratio, 0.95, 0.85), grade(syncs, limit, 2 * limit, higher_is_better=False)]
    status = "FAIL" if "FAIL" in statuses else "WARN" if "WARN" in statuses else "PASS"
    note = f"targets ratio >= 0.95, syncs/step <= {limit}" + ("; compiled" if compile_model else "")
    return Row(name, status, numbers, note)
