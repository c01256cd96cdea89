"""Restart AdamX's second moment mid-run (issue 25's mechanism probe): ``+probe=reset_v``.

Figure 5's β̂2,t → 1 rows plateau with a frozen v (telemetry: median sqrt(v) flat while |m_hat| falls by
decades). This probe tests that reading: at step ``probes.reset_v_at`` (41,976 in claims_fig5, an epoch
end) the run's AdamX state is restarted and training goes on to T in the same run directory, so its
train.csv is the unchanged run up to that step and the restarted one after it.

What is restarted: AdamX keeps one step counter per parameter, which drives β̂1,t, β̂2,t and m's bias
correction together, so v's schedule cannot restart alone. The probe sets every parameter's ``step`` to 0
and zeroes ``exp_avg`` and ``exp_avg_sq``; at the next step β̂1,1 = 0 and (for AdamX's and Adam's
schedules) β̂2,1 = 0, so m and v start from that step's gradient, as at t = 1. The weights are untouched.

Resume: the restart is committed at once (last.pt at that step, then ``reset_v.json`` beside it). A run
stopped between the two is recognised by its optimizer's step counter on the next epoch end; a run whose
restart was lost altogether (it passed the step without one) is refused with a sentence, never continued.

    python -m scripts.probe_run experiment=claims_fig5 optimizer=adamx seed=0 +probe=reset_v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from adamx.adamx import AdaptiveMomentOptimizer
from experiments.train.errors import UsageError

MARKER = "reset_v.json"


class ResetMissed(RuntimeError):
    """The run passed its reset step without the restart (a stop at the wrong moment); it cannot go on."""


def reset_adaptive_state(optimizer: torch.optim.Optimizer) -> int:
    """Restart an AdamX-family or AdaX optimizer's state (step 0, m = 0, v = 0) for every parameter that
    has state; return how many. Any other optimizer is refused with a sentence."""
    if not isinstance(optimizer, AdaptiveMomentOptimizer):
        raise UsageError(
            f"probes.reset_v_at restarts AdamX's state, but this run's optimizer is "
            f"{type(optimizer).__name__}; use it with optimizer=adamx (or adam, adam_*, adax), or drop +probe=reset_v."
        )
    count = 0
    for state in optimizer.state.values():
        if "exp_avg" not in state:
            continue
        state["step"].zero_() if isinstance(state["step"], torch.Tensor) else state.update(step=0)
        for key in ("exp_avg", "exp_avg_sq"):
            state[key].zero_()
        for key in ("exp_avg_scale", "exp_avg_sq_scale", "decay_carry"):
            if key in state:
                state[key] = 1.0
        count += 1
    return count


def optimizer_step_count(optimizer: torch.optim.Optimizer) -> int | None:
    """The step counter of the first parameter with state (all move together), None before any step."""
    for state in optimizer.state.values():
        step = state.get("step")
        if step is not None:
            return int(step.item()) if isinstance(step, torch.Tensor) else int(step)
    return None


class ResetV:
    """The hook pair: ``on_epoch_end`` restarts at ``at`` (an epoch end) and checks afterwards."""

    def __init__(self, at: int) -> None:
        if at < 1:
            raise UsageError(f"probes.reset_v_at={at} must be a step >= 1 (an epoch end), or null.")
        self.at = int(at)

    def _marker(self, trainer: Any) -> Path:
        return Path(trainer.run_dir) / MARKER

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        if trainer.step % trainer.steps_per_epoch:
            raise ValueError("ResetV runs at epoch ends only")  # the trainer's contract; never user-caused
        if self.at % trainer.steps_per_epoch:
            raise UsageError(
                f"probes.reset_v_at={self.at} is not an epoch end ({trainer.steps_per_epoch} steps per epoch); "
                f"use a multiple, e.g. {self.at - self.at % trainer.steps_per_epoch}."
            )
        marker = self._marker(trainer)
        if trainer.step == self.at and not marker.exists():
            count = reset_adaptive_state(trainer.optimizer)
            trainer.save()  # last.pt at this step now holds the restarted state
            if trainer.main:
                marker.write_text(json.dumps({"reset_at": self.at, "parameters": count}) + "\n")
        elif trainer.step > self.at and not marker.exists():
            since = optimizer_step_count(trainer.optimizer)
            if since == trainer.step - self.at:  # stopped after last.pt, before the marker: the restart is in
                if trainer.main:
                    marker.write_text(json.dumps({"reset_at": self.at, "recovered": True}) + "\n")
            else:
                raise ResetMissed(
                    f"{trainer.run_dir} passed step {self.at} without its v reset (its optimizer has taken "
                    f"{since} steps, not {trainer.step - self.at}); pass force=true to train this run again."
                )
