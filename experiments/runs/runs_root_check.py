"""A Hydra callback: an unusable ``runs_root`` is one sentence and exit 2, not Hydra's traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.train.errors import show_tracebacks


class RunsRootCheck(Callback):
    """Hydra creates the run (or sweep) directory before run.py gets control; when it cannot, say so in
    one sentence naming runs_root and exit 2, instead of Hydra's traceback and exit 1. The same for a
    runs_root that is empty (an unset variable: the run directory would land under ``/``) and for a
    directory name that cannot be resolved (a typo inside an ``experiment_name`` interpolation)."""

    def _fail(self, config: DictConfig, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            root = OmegaConf.select(config, "runs_root", throw_on_resolution_failure=True)
            if root is None or not str(root).strip():
                if show_tracebacks(config):
                    raise ValueError(f"runs_root={root!r} is empty")
                self._fail(
                    config,
                    f"runs_root={'' if root is None else root!r} is empty (an unset variable?), so the run "
                    "directory would be made under /; set runs_root (or $ADAMX_RUNS) to a folder.",
                )
            folder = Path(str(OmegaConf.select(config, key, throw_on_resolution_failure=True)))
        except OmegaConfBaseException as error:
            if show_tracebacks(config):
                raise
            why = " ".join(str(error).split()).split(" full_key:")[0]
            self._fail(
                config,
                f"the run directory's name cannot be resolved ({why}); check the interpolations in "
                "experiment_name, runs_root and the other keys it is made of (e.g. "
                "experiment_name=lr_${optimizer.lr}).",
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if show_tracebacks(config):
                raise
            self._fail(
                config,
                f"runs_root={config.runs_root}: cannot create {folder} "
                f"({' '.join(str(error).split())}); set runs_root (or $ADAMX_RUNS) to a writable folder.",
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
