"""``python run.py`` with a probe that intervenes: ``probes.reset_v_at: t`` restarts AdamX's state at step t
(scripts/reset_v.py; ``+probe=reset_v``), through the trainer's hooks, in the same Hydra app and run
directories as run.py (sweeps with -m, resume, skip). The probes that only measure (optim.csv, full_loss.csv)
are trainer keys that run.py honours too: ``trainer.optim_stats_every``, ``trainer.full_loss_steps``,
``trainer.full_loss_at_eval`` (configs/trainer/default.yaml; experiments/train/probes.py).

    python -m scripts.probe_run -m experiment=claims_fig5 +probe=reset_v optimizer=adamx seed=0,1,2 runs_root=runs/claims
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import experiments.runs.rundir  # noqa: F401  (registers the path_safe resolver the run directory uses)
from experiments.train.trainer import Hooks
from scripts.reset_v import ResetV

PROBE_KEYS = {"reset_v_at"}


class Probes:
    """The hooks of one run, from the ``probes`` settings."""

    def __init__(self, settings: dict[str, Any]) -> None:
        unknown = sorted(set(settings) - PROBE_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown key(s) probes.{', probes.'.join(unknown)}; the keys are {sorted(PROBE_KEYS)} (the "
                "measuring probes are trainer keys: trainer.optim_stats_every, trainer.full_loss_steps, "
                "trainer.full_loss_at_eval)."
            )
        at = settings.get("reset_v_at")
        self.reset = ResetV(int(at)) if at is not None else None

    def hooks(self) -> Hooks:
        return Hooks(on_epoch_end=self.on_epoch_end)

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        if self.reset is not None:
            self.reset.on_epoch_end(trainer, epoch)


def probes_of(cfg: DictConfig) -> Probes:
    settings = cfg.get("probes") or {}
    return Probes(
        OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else settings
    )


def execute(cfg: DictConfig, overrides: list[str]) -> int:
    """Run ``cfg`` with its probes through run.py's ``execute`` (the same exit codes and messages)."""
    from experiments.train.errors import one_line
    from run import execute as run_execute

    try:
        probes = probes_of(cfg)
    except (ValueError, TypeError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return run_execute(cfg, overrides, hooks=probes.hooks())


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    code = execute(cfg, list(hydra_cfg.overrides.task))
    if code >= 128 or (code and hydra_cfg.mode != RunMode.MULTIRUN):
        sys.exit(code)


if __name__ == "__main__":
    main()
