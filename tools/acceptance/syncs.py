"""Count host-device synchronisations: the places where the CPU must wait for the accelerator.

``SyncCounter`` is a ``TorchDispatchMode`` that sees every aten op and counts the ones that block the host
on CUDA: ops whose output shape depends on the data (nonzero, masked_select, boolean-mask indexing,
unique, bincount, ...), scalars read back (``item``/``bool``/``int``: ``_local_scalar_dense``,
``equal``) and blocking copies between host and device. It works on the CPU too: with
``emulate_device=True`` (the default off CUDA) every tensor is treated as if it lived on the accelerator,
so ``torch.tensor(data, device=...)`` (aten ``lift_fresh``, one or more dimensions) counts as the
blocking host-to-device copy it is there. Copies a CPU run cannot see (``.cpu()``, ``.tolist()``, ``.numpy()`` of device tensors) are
counted on CUDA only. Scalars that stay on the host on CUDA as well are left out of the emulation too:
an optimizer's ``step`` counters (torch's optimizers and adamx keep them on the CPU unless
``capturable=True``, and read them every step), recognised through torch's global optimizer-step hooks. ``cuda_sync_warnings`` is the device's own count (``torch.cuda.set_sync_debug_mode``)
for code the dispatch mode cannot enter, such as compiled graphs.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Output shape depends on the values: the host must read a count back before it can allocate.
DATA_DEPENDENT = {
    aten.nonzero.default,
    aten.nonzero.out,
    aten.masked_select.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.unique_dim_consecutive.default,
    aten.bincount.default,
}
# A value read back to Python (item, bool(t), int(t), float(t), torch.equal).
SCALAR_READS = {aten._local_scalar_dense.default, aten.equal.default}
# Indexing that turns a boolean mask into indices (an implicit nonzero).
MASK_INDEXING = {
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
}
COPIES = {aten._to_copy.default, aten.copy_.default}


def _is_mask(index: object) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _touches_device(args) -> bool:
    """Whether any tensor among ``args`` (one level of lists included) lives off the CPU."""
    for a in args:
        items = a if isinstance(a, (list, tuple)) else (a,)
        if any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in items):
            return True
    return False


@dataclass
class SyncEvent:
    op: str
    reason: str
    where: str = ""
    source: int | None = None  # id() of the tensor a scalar read came from


def _host_step_counters(optimizer: torch.optim.Optimizer) -> set[int]:
    """ids of the optimizer's ``step`` tensors that live on the host (non-capturable groups)."""
    ids = set()
    for group in optimizer.param_groups:
        if group.get("capturable", False):
            continue
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor) and step.device.type == "cpu":
                ids.add(id(step))
    return ids


@dataclass
class SyncCounter(TorchDispatchMode):
    """``with SyncCounter() as c: step()`` then ``c.total``, ``c.by_reason()``, ``c.events``.

    ``emulate_device``: count as if the tensors lived on an accelerator (default: True unless CUDA is
    available). ``trace``: remember the innermost project frame of each event (slower; for reports).
    """

    emulate_device: bool | None = None
    trace: bool = False
    events: list[SyncEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        if self.emulate_device is None:
            self.emulate_device = not torch.cuda.is_available()
        self._hooks: list = []
        self._step_start = 0

    def __enter__(self):
        if self.emulate_device:  # host-resident step counters read inside optimizer.step() are no syncs
            from torch.optim.optimizer import (
                register_optimizer_step_post_hook,
                register_optimizer_step_pre_hook,
            )

            self._hooks = [
                register_optimizer_step_pre_hook(self._before_step),
                register_optimizer_step_post_hook(self._after_step),
            ]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        return super().__exit__(*exc)

    def _before_step(self, optimizer, args, kwargs) -> None:
        self._step_start = len(self.events)

    def _after_step(self, optimizer, args, kwargs) -> None:
        counters = _host_step_counters(optimizer)
        self.events[self._step_start :] = [
            e
            for e in self.events[self._step_start :]
            if not (e.reason == "scalar read" and e.source in counters)
        ]

    @property
    def total(self) -> int:
        return len(self.events)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.events))

    def by_op(self) -> dict[str, int]:
        return dict(Counter(e.op for e in self.events))

    def reset(self) -> None:
        self.events.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = self._reason(func, args, kwargs)
        if reason is not None:
            source = id(args[0]) if args and isinstance(args[0], torch.Tensor) else None
            self.events.append(SyncEvent(str(func.overloadpacket.__name__), reason, self._where(), source))
        return func(*args, **kwargs)

    def _reason(self, func, args, kwargs) -> str | None:
        if func in COPIES:
            return self._copy_reason(func, args, kwargs)
        if not self.emulate_device and not _touches_device(args):
            return None  # host tensors only (e.g. an optimizer's CPU step counter): no device to wait for
        if func in DATA_DEPENDENT:
            return "data-dependent shape"
        if func in SCALAR_READS:
            return "scalar read"
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            return "data-dependent shape"
        if func in MASK_INDEXING:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(_is_mask(i) for i in indices or ()):
                return "boolean-mask indexing"
            return None
        if self.emulate_device and func in (aten.lift_fresh.default, aten.lift_fresh_copy.default):
            # torch.tensor(data): a copy from host memory on CUDA. 0-dim ones are left out: a Python
            # scalar wrapped for an op (x[mask] = 0.0, x * 2) is built on the device or passed by value.
            return "host-to-device copy" if args[0].dim() > 0 else None
        return None

    def _copy_reason(self, func, args, kwargs) -> str | None:
        if func is aten._to_copy.default:
            src = args[0]
            dst_device = kwargs.get("device") or src.device
            non_blocking = kwargs.get("non_blocking", False)
        else:
            dst, src = args[0], args[1]
            dst_device = dst.device
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        src_device = torch.device(src.device)
        dst_device = torch.device(dst_device)
        if src_device.type == dst_device.type:
            return None
        if dst_device.type == "cpu":
            return None if non_blocking else "device-to-host copy"
        if src_device.type == "cpu" and not (non_blocking and src.is_pinned()):
            return "host-to-device copy"
        return None

    def _where(self) -> str:
        if not self.trace:
            return ""
        for frame in reversed(traceback.extract_stack()[:-3]):
            name = frame.filename.replace("\\", "/")
            if "/torch/" not in name and "acceptance/syncs.py" not in name:
                return f"{name.rsplit('/', 2)[-2]}/{name.rsplit('/', 1)[-1]}:{frame.lineno}"
        return ""


@contextlib.contextmanager
def cuda_sync_warnings() -> Iterator[list[str]]:
    """The synchronising CUDA calls inside the block, as counted by the device runtime itself.

    Yields a list that fills with one message per synchronisation (``set_sync_debug_mode('warn')``).
    """
    found: list[str] = []
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(before)
            found.extend(str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message))
