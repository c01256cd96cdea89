"""Entry point: ``python run.py [group=option ...] [key=value ...]`` trains one run; ``-m`` sweeps.

Plain ``python run.py`` is the demo: AdamX on scikit-learn's bundled digits, about a minute on a CPU.
Configuration groups live in configs/ (docs/harness.md); the run directory is printed at the end.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import experiments.runs.rundir  # noqa: F401  (registers the path_safe resolver the run directory uses)


def _print_result(summary: dict) -> None:
    final = summary.get("final", {}).get("metrics", {})
    best = summary.get("best", {})
    print(f"run directory: {summary.get('run_dir')}")
    print(f"status: {summary.get('status')}" + (f" ({summary['reason']})" if summary.get("reason") else ""))
    if final:
        print(
            f"final (epoch {summary['final']['epoch']}): "
            + ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        )
    if best:
        print("best: " + ", ".join(f"{k} {v['value']:.4g} (epoch {v['epoch']})" for k, v in best.items()))
    if summary.get("wall_time_s") is not None:
        print(
            f"wall time: {summary['wall_time_s']:.1f} s, throughput {summary.get('throughput_samples_per_s')} samples/s"
        )


def execute(cfg: DictConfig, overrides: list[str], hooks: Any = None) -> int:
    """Run ``cfg`` (with the trainer ``hooks``, if any: scripts/probe_run.py), print the outcome, and return
    the process exit code: 0 finished or skipped, 2 a setting, file or run directory to fix (one sentence),
    1 a failed run, 130 Ctrl-C (128 + N for a signal N). Other exceptions are bugs: they propagate with their
    traceback (exit 1)."""
    import torch

    from data import DatasetNotFoundError
    from experiments.runs.launch import run_experiment
    from experiments.runs.requeue import SubmititRequeue
    from experiments.train.errors import UsageError, one_line, show_tracebacks
    from experiments.train.trainer import RunInterrupted, TrainingFailed

    requeue = SubmititRequeue.capture()  # submitit's handler, before the trainer installs its own
    try:
        summary = run_experiment(cfg, overrides, hooks=hooks)
    except (UsageError, DatasetNotFoundError) as error:  # bad setting, data path or run directory
        if show_tracebacks(cfg):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError as error:  # not a bug: summary.json says failed, with the reason
        if show_tracebacks(cfg):
            raise
        print(f"failed: out of memory ({one_line(error)[:200]}); lower dataset.batch_size.", file=sys.stderr)
        return 1
    except RunInterrupted as stop:  # SIGTERM/SIGUSR1/SIGINT: last.pt holds the step the run stopped at
        print(f"interrupted: {stop}", file=sys.stderr)
        requeue.after(stop.signum)  # under submitit, on its signal: requeue the job (does not return)
        return stop.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: last.pt keeps the previous checkpoint
        print("interrupted: re-run the same command to resume from last.pt.", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk or quota: the previous last.pt survives (atomic writes)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT) or show_tracebacks(cfg):
            raise
        where = Path(error.filename).parent if error.filename else "the run directory's file system"
        print(
            f"failed: no space left on {where} ({error.strerror}); free some space and re-run the same "
            "command to resume from last.pt.",
            file=sys.stderr,
        )
        return 1
    if not summary:  # a DDP rank other than 0: rank 0 reports
        return 0
    if summary.get("skipped"):
        print(f"already {summary.get('status')}: {summary.get('run_dir')} (pass force=true to run it again)")
    _print_result(summary)
    return 1 if summary.get("status") == "failed" else 0


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    code = execute(cfg, list(hydra_cfg.overrides.task))
    if code == 2:  # refused: take back the folder Hydra made for it, if that is all there is
        from experiments.runs.rundir import remove_if_only

        remove_if_only(Path(hydra_cfg.runtime.output_dir), [f"{hydra_cfg.job.name}.log"], Path(cfg.runs_root))
    # In a sweep a failed or refused run is reported and the other jobs go on; a stop by a signal
    # (Ctrl-C 130, or 128 + the signal's number) stops them all.
    if code >= 128 or (code and hydra_cfg.mode != RunMode.MULTIRUN):
        sys.exit(code)


if __name__ == "__main__":
    main()
