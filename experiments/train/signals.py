"""Stop requests: SIGTERM, SIGUSR1 and SIGINT set a flag that the trainer reads at step boundaries.

The handlers do no I/O: they only record the signal. The trainer finishes the step in flight, writes a
checkpoint at that step and raises ``RunInterrupted``. A second SIGINT while stopping raises
KeyboardInterrupt at once (the user insists; the run keeps its last checkpoint), except inside a commit
(``with stop.commit():`` around last.pt's rename and the trainer's note of it), where it waits for the
commit's end, so that summary.json, last.pt and the logs never disagree about the committed step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's own variable (submitit/core/job_environment.py)


def under_submitit() -> bool:
    """Whether this process is a submitit job (submitit exports SUBMITIT_EXECUTOR=slurm|local to its jobs)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def preempt_signal() -> signal.Signals:
    """The signal submitit sends and handles as "time limit near or preempted" (USR2 by default)."""
    name = "SIG" + os.environ.get(PREEMPT_SIGNAL_ENV, "USR2").upper().removeprefix("SIG")
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(
            f"{PREEMPT_SIGNAL_ENV}={os.environ[PREEMPT_SIGNAL_ENV]!r} names no signal; unset it (submitit then "
            "uses USR2) or set it to USR1 or USR2."
        ) from None


def submitit_signal() -> signal.Signals | None:
    """The signal submitit checkpoints and requeues on in this job, or None outside submitit."""
    return preempt_signal() if under_submitit() else None


def stop_signals() -> tuple[int, ...]:
    """The signals a run stops on: SIGINT, SIGTERM, SIGUSR1, and under submitit its preemption signal
    (SIGUSR2 by default), which run.py hands back to submitit after the stop so that it requeues the job."""
    extra = submitit_signal()
    return STOP_SIGNALS + ((extra,) if extra is not None and extra not in STOP_SIGNALS else ())


class StopRequests:
    """Install the stop handlers for the duration of a ``with`` block and restore the previous ones after.

    ``signum`` is the first stop signal received (None until one arrives). Outside the main thread
    (where Python cannot install handlers) the block runs without them.
    """

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        self.signals = stop_signals() if signals is None else signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._committing = False
        self._deferred = False  # a second Ctrl-C that arrived inside a commit

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            if self._committing:
                self._deferred = True
                return
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without the step-boundary checkpoint
        if self.signum is None:
            self.signum = signum

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """A block a second Ctrl-C does not cut: it raises KeyboardInterrupt when the block ends."""
        self._committing = True
        try:
            yield
        finally:
            self._committing = False
            if self._deferred:
                self._deferred = False
                raise KeyboardInterrupt

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def stop_reason(signum: int, step: int, epoch: int, batch_in_epoch: int) -> str:
    """summary.json's reason for a run stopped by ``signum`` after ``step`` (``epoch`` epochs done)."""
    where = f"step {step}" + (
        f", batch {batch_in_epoch} of epoch {epoch + 1}" if batch_in_epoch else f", end of epoch {epoch}"
    )
    return f"stopped by {signal.Signals(signum).name} at {where}; last.pt holds that step; re-run the same command to resume"
