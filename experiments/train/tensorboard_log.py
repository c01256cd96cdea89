"""Optional TensorBoard event files beside a run's CSVs (``trainer.tensorboard=true``).

The CSVs stay the source of truth; this mirrors them for ``tensorboard --logdir runs``. Without the
``tensorboard`` package (or when disabled) every call is a no-op, with one warning per process.
A resumed session purges the events a stopped session wrote past its checkpoint, as ``CsvLog.truncate``
does for the CSVs: the writer opens at the first step it is given, with ``purge_step`` set to it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        _warned = True


class TensorBoardLog:
    """``train(step, loss, lr)``, ``eval(step, metrics)`` and ``close()`` into ``run_dir``'s event files."""

    def __init__(self, run_dir: Path | str, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self._writer: Any = None
        self._writer_class: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch raises this when the tensorboard package is missing
            _warn_once(
                f"trainer.tensorboard=true but TensorBoard cannot be imported ({error}); logging to the CSVs "
                "only. Install it with `pip install tensorboard` (it is in the harness extra)."
            )
            return
        self._writer_class = SummaryWriter

    @property
    def enabled(self) -> bool:
        return self._writer_class is not None

    def _open(self, step: int) -> Any:
        if self._writer is None and self._writer_class is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # Events at or after this step from an earlier session of the run are dropped by TensorBoard.
            self._writer = self._writer_class(log_dir=str(self.run_dir), purge_step=int(step))
        return self._writer

    def train(self, step: int, loss: float, lr: float) -> None:
        """One optimizer step (``step`` counts completed steps, as train.csv does)."""
        writer = self._open(step)
        if writer is None:
            return
        if math.isfinite(loss):  # a non-finite loss stops the run; the CSV records it
            writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", lr, step)

    def eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """An evaluation at optimizer step ``step``: one ``eval/<metric>`` scalar each; flushed at once."""
        writer = self._open(step)
        if writer is None:
            return
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", float(value), step)
        writer.flush()

    def scalars(self, prefix: str, step: int, values: Mapping[str, float]) -> None:
        """``<prefix>/<name>`` scalars at ``step`` (finite values only: a blank cell stays blank)."""
        writer = self._open(step)
        if writer is None:
            return
        for name, value in values.items():
            if math.isfinite(float(value)):
                writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
