"""How a run can end other than finished: errors the user can fix (a bad setting, file or run directory:
run.py prints the one sentence naming the key or file and the way out, without a traceback, and exits 2;
``debug=true`` or ``HYDRA_FULL_ERROR=1`` shows the traceback instead), a stop signal, a failed training."""

from __future__ import annotations

import os
from typing import Any


class UsageError(ValueError):
    """A setting, file or run directory that the user has to change; the message says which and how.

    A ValueError, so callers that caught the harness's earlier ValueErrors still catch it.
    """


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its type name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def show_tracebacks(cfg: Any = None) -> bool:
    """Whether errors the user can fix should still show their traceback (``debug=true`` or
    ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg is not None and cfg.get("debug", False))


class RunInterrupted(Exception):
    """A stop signal arrived; the trainer finished the step in flight and committed last.pt at it.

    ``exit_code`` is the shell's convention for death by that signal (SIGINT 130, SIGTERM 143,
    SIGUSR1 138), so a scheduler sees what happened while the run directory stays resumable.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class TrainingFailed(RuntimeError):
    """The run stopped on a non-finite loss; the message is the one-line reason."""

    @classmethod
    def nonfinite(cls, step: int, epoch: int, value: float, committed: dict) -> TrainingFailed:
        """The loss became ``value`` at ``step``; ``committed`` holds last.pt's epoch and step."""
        kept = (
            f"last.pt keeps the last good state (epoch {committed['epoch']}, step {committed['step']})"
            if committed["step"]
            else "no checkpoint was written yet"
        )
        return cls(
            f"loss became {value} at step {step} (epoch {epoch}); {kept}; lower optimizer.lr, set "
            "trainer.grad_clip, or use trainer.precision=fp32"
        )


def outcome(error: BaseException, epoch: int, step: int) -> tuple[str, str]:
    """summary.json's (status, reason) for a run that ``error`` ended, ``epoch`` and ``step`` being last.pt's."""
    if isinstance(error, (RunInterrupted, TrainingFailed)):
        return ("interrupted" if isinstance(error, RunInterrupted) else "failed"), str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", (
            f"interrupted in epoch {epoch + 1}; last.pt holds step {step}; re-run the same command to resume from it"
        )
    first = (str(error).strip().splitlines() or [""])[0]
    return "failed", f"{type(error).__name__}: {first}"
