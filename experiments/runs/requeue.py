"""Slurm requeue through submitit: after the trainer's graceful stop, hand the signal back to submitit.

Under hydra-submitit-launcher each job runs ``python -m submitit.core._submit``, which installs a handler
for its preemption signal (``SIGUSR2`` unless ``$SUBMITIT_PREEMPT_SIGNAL`` names another; Slurm sends it
``signal_delay_s`` before the time limit) that pickles the same job again, runs ``scontrol requeue`` and
exits. The trainer must see that signal first (finish the step, write a mid-epoch checkpoint, stop);
``SubmititRequeue.capture()`` keeps submitit's handler before the trainer replaces it, and
``after(signum)`` calls it once the trainer has stopped, so the requeued job resumes the same run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from experiments.train.signals import submitit_signal

class SubmititRequeue:
    """submitit's handler for its signal, kept aside while the trainer handles that signal itself."""

    def __init__(self, signum: signal.Signals | None, handler: Callable[[int, Any], Any] | None) -> None:
        self.signum, self.handler = signum, handler

    @classmethod
    def capture(cls) -> SubmititRequeue:
        """Read (not change) the handler submitit installed; call before the trainer installs its own."""
        signum = submitit_signal()
        if signum is None:
            return cls(None, None)
        handler = signal.getsignal(signum)
        return cls(signum, handler if callable(handler) else None)

    @property
    def active(self) -> bool:
        return self.handler is not None

    def after(self, signum: int) -> None:
        """If the run stopped on submitit's signal, let submitit requeue the job: this normally does not return
        (submitit exits the process: on Slurm after ``scontrol requeue``, locally with exit code 144)."""
        if self.handler is not None and signum == self.signum:
            self.handler(signum, None)
