"""The device's training loss and gradient against the CPU's: same weights, same batch, float32 with TF32 off.

A wrong kernel choice, a channels_last slip or an autocast that should not be there passes every speed
and determinism row; here it shows as a loss that differs from the CPU's by more than float32 rounding
explains. Per task (its first model of ``synthetic.specs``):

- ``cpu``: the model and batch on the CPU, float32, contiguous;
- ``ref64``: the same in float64 (the rounding-free reference);
- ``device``: a copy of the weights on the device, channels_last input and weights (as the model rows
  train), float32 with ``allow_tf32`` off for matmuls and cuDNN, through ``task.to_device``.

Tolerance, derived per row from measured float32 spreads on the CPU. For the loss, ``g`` = the larger of
the CPU float32 loss's relative distance from the float64 loss and from the CPU's own channels_last
float32 loss: both are legitimate float32 answers that differ only by rounding (the second by summation
order, as the device's does), so ``g`` measures how much float32 rounding moves this loss on this batch.
The device's float32 loss carries rounding of the same kind: |device - cpu| <= |device - exact| +
|cpu - exact| is about 2g, up to ~10g for cuDNN's Winograd/FFT convolutions. PASS at
``tol = max(16 g, 2**-20)`` (the floor for a model so small that g underflows); WARN up to
``max(2**-12, 4 tol)`` (2**-12 is half of TF32's unit roundoff); FAIL above: as large as TF32 or bfloat16
(2**-8) arithmetic, or a wrong result. The gradient (relative norm of the difference) gets the same
``tol`` from its own contiguous-vs-channels_last spread, but FAILs only above ``max(2**-8, 64 tol)``:
through BatchNorm at batch 2 it is ill-conditioned (the spread is ~1e-4 for EfficientNetV2-M, ~1e-2 for
YOLOv7-tiny and U-Net on the CPU), so only a gap of bfloat16's size, or a thousand times the CPU's own
spread, is taken for a slip. (A bfloat16 autocast moved digits_cnn's gradient by 7e-3 and U-Net's by 0.6
while their losses moved by 0 and 1.7e-4: the loss alone would miss it.) The float64 pass is a forward pass only
(the CPU cost: EfficientNetV2-M's float64 backward alone took a minute on the 2-core box). On
``--device cpu`` the "device" is the CPU in channels_last again (so the row passes by construction): the
code path runs in CI.

Dropout-like modules are put in eval mode (their masks come from different generators on the two
devices); BatchNorm stays in training mode. Detection's loss includes a discrete assignment (OTA): a flip
of one anchor's assignment between the devices would show as a jump, not as rounding (the note says).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator

import torch

from tools.acceptance.runner import Context, Row
from tools.acceptance.synthetic import Spec, batch, specs, task_kwargs

FLOOR = 2.0**-20
FACTOR = 16.0
LOSS_WARN_UP_TO, LOSS_WIDEN = 2.0**-12, 4.0  # half of TF32's unit roundoff
GRAD_WARN_UP_TO, GRAD_WIDEN = 2.0**-8, 64.0  # bfloat16's unit roundoff


def small(spec: Spec, tiny: bool) -> Spec:
    """The spec at a size the CPU computes within seconds: 2 images, at most 160 pixels a side (the same
    kernels as at the training size; 320 costs four times as much on the CPU)."""
    return spec if tiny else dataclasses.replace(spec, batch=2, size=min(spec.size, 160))


def _quiet_random_modules(model: torch.nn.Module) -> None:
    for m in model.modules():
        if any(word in type(m).__name__ for word in ("Dropout", "DropPath", "StochasticDepth")):
            m.eval()


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def device_context(ctx: Context) -> contextlib.AbstractContextManager:
    """The numerics the device side runs under (a test plants a slip here)."""
    return no_tf32()


def _cast_batch(b: tuple, dtype: torch.dtype) -> tuple:
    """The images in ``dtype``; targets and masks as they are (the tasks' losses cast what they need)."""
    return (b[0].to(dtype), *b[1:])


def loss_and_grad(
    model: torch.nn.Module, task, b: tuple, grad: bool = True
) -> tuple[float, torch.Tensor | None]:
    """The task's training loss on ``b`` and the flat gradient (float64, on the CPU; None without ``grad``)."""
    model.train()
    _quiet_random_modules(model)
    model.zero_grad(set_to_none=True)
    if not grad:
        with torch.no_grad():
            return float(task.loss(model, b).double().cpu()), None
    loss = task.loss(model, b)
    loss.backward()
    flat = torch.cat([p.grad.reshape(-1).double().cpu() for p in model.parameters() if p.grad is not None])
    return float(loss.detach().double().cpu()), flat


def grade_gap(
    gap: float, g: float, warn_up_to: float = LOSS_WARN_UP_TO, widen: float = LOSS_WIDEN
) -> tuple[str, float]:
    """(status, tolerance) of a device-vs-CPU relative gap given the measured float32 spread ``g``:
    PASS up to ``tol = max(16 g, 2**-20)``, WARN up to ``max(warn_up_to, widen x tol)``, FAIL above."""
    tol = max(FACTOR * g, FLOOR)
    return ("PASS" if gap <= tol else "WARN" if gap <= max(warn_up_to, widen * tol) else "FAIL"), tol


def compare(ctx: Context, spec: Spec) -> Row:
    from experiments.tasks import build_task
    from models import build_model

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(spec.model, num_classes=spec.num_classes, **spec.model_kwargs)
    b = batch(spec, cpu, seed=0)

    def fresh_task():
        return build_task(spec.task, **task_kwargs(spec))

    loss32, grad32 = loss_and_grad(copy.deepcopy(model), fresh_task(), b)
    loss64, _ = loss_and_grad(
        copy.deepcopy(model).double(), fresh_task(), _cast_batch(b, torch.float64), False
    )
    task = fresh_task()
    loss_cl, grad_cl = loss_and_grad(
        copy.deepcopy(model).to(memory_format=torch.channels_last), task, task.to_device(b, cpu, True)
    )
    task = fresh_task()
    on_device = copy.deepcopy(model).to(ctx.device, memory_format=torch.channels_last)
    with device_context(ctx):
        loss_d, grad_d = loss_and_grad(on_device, task, task.to_device(b, ctx.device, True))

    scale_l, scale_g = abs(loss64) or 1.0, float(grad32.norm()) or 1.0
    g_loss = max(abs(loss32 - loss64), abs(loss_cl - loss32)) / scale_l
    g_grad = float((grad_cl - grad32).norm()) / scale_g
    gap_loss, gap_grad = abs(loss_d - loss32) / scale_l, float((grad_d - grad32).norm()) / scale_g
    s_loss, tol_loss = grade_gap(gap_loss, g_loss)
    s_grad, tol_grad = grade_gap(gap_grad, g_grad, GRAD_WARN_UP_TO, GRAD_WIDEN)
    status = "FAIL" if "FAIL" in (s_loss, s_grad) else "WARN" if "WARN" in (s_loss, s_grad) else "PASS"
    numbers = {
        "model": spec.model,
        "batch": spec.batch,
        "loss_cpu": loss32,
        "loss_device": loss_d,
        "rel_gap_loss": gap_loss,
        "tol_loss": tol_loss,
        "rel_gap_grad": gap_grad,
        "tol_grad": tol_grad,
        "fp32_spread_loss": g_loss,
        "fp32_spread_grad": g_grad,
    }
    note = f"tol = max({FACTOR:g} x fp32 spread on the CPU, 2^-20); FAIL above max(2^-12, 4 tol) (loss), max(2^-8, 64 tol) (grad)"
    if status != "PASS":
        note += "; more than fp32 rounding: TF32 or autocast on, a lower-precision kernel, or a wrong one"
        if spec.task == "detection":
            note += " (or an OTA assignment flip: rerun --only loss)"
    if not ctx.cuda:
        note += "; CPU vs CPU (channels_last vs contiguous)"
    return Row(f"loss.{spec.task}.vs_cpu", status, numbers, note)


def check_losses_vs_cpu(ctx: Context) -> list[Row]:
    """One row per task: ``loss.<task>.vs_cpu``."""
    rows, seen = [], set()
    for spec in specs(ctx.tiny):
        if spec.task in seen:
            continue
        seen.add(spec.task)
        try:
            rows.append(compare(ctx, small(spec, ctx.tiny)))
        except Exception as error:  # noqa: BLE001 - one task failing must not hide the others
            first = (str(error).strip().splitlines() or [""])[0][:160]
            rows.append(
                Row(
                    f"loss.{spec.task}.vs_cpu",
                    "FAIL",
                    {"model": spec.model},
                    f"{type(error).__name__}: {first}",
                )
            )
    return rows
