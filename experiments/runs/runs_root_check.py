"""A Hydra callback: an unusable ``runs_root`` is one sentence and exit 2, not Hydra's traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments.train.errors import show_tracebacks


class RunsRootCheck(Callback):
    """Hydra creates the run (or sweep) directory before run.py gets control; when it cannot, say so in
    one sentence naming runs_root and exit 2, instead of Hydra's traceback and exit 1."""

    def _check(self, config: DictConfig, key: str) -> None:
        folder = Path(str(OmegaConf.select(config, key)))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if show_tracebacks(config):
                raise
            print(
                f"error: runs_root={config.runs_root}: cannot create {folder} "
                f"({' '.join(str(error).split())}); set runs_root (or $ADAMX_RUNS) to a writable folder.",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
