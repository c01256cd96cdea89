"""From a composed config to a finished run directory.

The order is what keeps a run directory trustworthy: check the settings and the directory's record
(read-only), build data, model, optimizer, schedule and Trainer (still writing nothing, so a rejected
command leaves nothing behind), then take the directory's lock, check again under it, and train.
"""

from __future__ import annotations

import contextlib
import csv
import pickle
import re
import time
import urllib.error
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import adamx
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.runs import devices
from experiments.train import collectives
from experiments.runs.build import (
    apply_per_optimizer,
    build_optimizer,
    dataset_kwargs,
    hessian_update_interval,
    model_kwargs,
    seed_value,
    task_kwargs,
    trainer_config,
)
from experiments.train.collectives import DistInfo
from experiments.train.errors import UsageError, one_line
from experiments.runs.identity import data_identity, identity_differences, run_identity
from experiments.train.loaders import DeviceEpochLoader, eval_loader, train_loader
from experiments.runs.rundir import run_dir, write_config
from experiments.train.files import read_json, remove_stale_temporaries, write_json
from experiments.runs.runlock import RunLock
from experiments.train.schedule import build_lr_factor
from experiments.train.seeding import seed_everything
from experiments.train.trainer import Hooks, RunInterrupted, Trainer, TrainerConfig, TrainingFailed

RUN_FILES = ("config.yaml", "train.csv", "eval.csv", "summary.json", "last.pt", "best.pt")
_SECTION_KEY = re.compile(r"\b(optimizer|dataset|model|task|schedule|trainer)\.\w+")


# ---------------------------------------------------------------------- the run directory's record


def _read_config(path: Path) -> dict | None:
    """The run's saved config.yaml as a dict; None when absent; a UsageError when it is not a YAML mapping."""
    if not path.exists():
        return None
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError, OSError) as error:
        loaded = error
    if not isinstance(loaded, dict):
        why = one_line(loaded) if isinstance(loaded, Exception) else f"it holds a {type(loaded).__name__}"
        raise UsageError(
            f"{path} is not a readable config ({why}); restore it, delete it (last.pt keeps the run's "
            "identity), or pass force=true to train the run again from scratch."
        )
    return loaded


def _read_checkpoint(path: Path) -> dict | None:
    """last.pt, memory-mapped (reading its identity costs little for a large model); None when absent."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        why = "it is empty" if path.stat().st_size == 0 else one_line(error).split(". ")[0][:100]
        raise UsageError(
            f"{path} cannot be read, it is truncated or corrupt ({why}); pass force=true to train the run "
            "again from scratch."
        ) from error


def _device_type(summary: dict | None) -> str | None:
    device = (summary or {}).get("device")
    return str(device).split(":")[0].split(" ")[0] if device else None


def _logged_steps(path: Path, up_to: int) -> set[int]:
    """The steps of the whole rows of a run's CSV log at or before ``up_to`` (a torn last line is not one)."""
    steps = set()
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if None in row or any(value is None for value in row.values()):
                continue
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            if step <= up_to:
                steps.add(step)
    return steps


def _evaluated_epochs(epoch: int, identity: dict | None) -> int | None:
    """How many eval.csv rows a run that completed ``epoch`` epochs has written (None: not known)."""
    every, total = (identity or {}).get("trainer.eval_every"), (identity or {}).get("trainer.epochs")
    if not isinstance(every, int) or not isinstance(total, int) or every < 1:
        return None
    return sum(1 for e in range(1, epoch + 1) if e % every == 0 or e == total)


def _check_logs(path: Path, checkpoint: dict, identity: dict | None) -> None:
    """Refuse a last.pt whose train.csv or eval.csv is gone, emptied or cut short: resuming would leave a
    hole in the run's history. train.csv holds one row per step, eval.csv one per evaluated epoch."""
    step, epoch = int(checkpoint.get("step", 0)), int(checkpoint.get("epoch", 0))
    evals = _evaluated_epochs(epoch, identity)
    needed = {"train.csv": step if step > 0 else None}
    needed["eval.csv"] = evals if evals else (1 if checkpoint.get("final") else None)
    missing, short = [], []
    for name, rows in needed.items():
        if rows is None:
            continue
        if not (path / name).is_file():
            missing.append(name)
            continue
        have = len(_logged_steps(path / name, step))
        if name == "train.csv" and have != rows or name == "eval.csv" and evals and have != rows:
            short.append(f"{name} holds {have} of its {rows} rows")
    where = f"{path} holds last.pt (epoch {epoch}, step {step})"
    if missing:
        raise UsageError(
            f"{where} but not {' or '.join(missing)}, so resuming would restart the run's history mid-run; "
            f"restore {'them' if len(missing) > 1 else 'it'}, or pass force=true to train the run again "
            "from scratch."
        )
    if short:
        raise UsageError(
            f"{where} but {' and '.join(short)} (emptied or cut short), so resuming would leave a hole in "
            "the run's history; restore the file, or pass force=true to train the run again from scratch."
        )


def diverged(summary: dict) -> bool:
    """A failed run whose loss became non-finite: its failure is its result (the optimizer diverged with
    these settings), so re-running the same command reports it instead of training it again."""
    return bool(summary.get("diverged")) or str(summary.get("reason") or "").startswith("loss became")


def _refuse(path: Path, diff: list[str], what: str) -> UsageError:
    if what == "failed run":  # e.g. after an out-of-memory error, the advised smaller batch
        return UsageError(
            f"{path} holds a failed run made with a different config ({'; '.join(diff)}); re-run the same "
            "command to resume it from last.pt, pass force=true to train it again from scratch with the new "
            "settings, or give this run its own experiment_name (e.g. experiment_name=bs_${dataset.batch_size})."
        )
    return UsageError(
        f"{path} holds a {what} made with a different config ({'; '.join(diff)}); pass force=true to "
        "replace it, or give this run its own experiment_name (e.g. experiment_name=lr_${optimizer.lr})."
    )


def check_run_dir(path: Path, identity: dict[str, Any]) -> dict | None:
    """Read-only: the summary of a finished or diverged run with this identity (to skip), None to start or
    resume (a run that failed otherwise, after an out-of-memory error or a full disk, resumes from its
    last.pt: that is the last commit before the failure), and a UsageError for a run with another identity
    or a record that cannot be trusted."""
    if not path.is_dir():
        return None
    summary = read_json(path / "summary.json")
    summary = summary if isinstance(summary, dict) else None  # unreadable: the trainer rewrites it
    status = (summary or {}).get("status")
    done = status == "finished" or (status == "failed" and diverged(summary))
    what = f"{status} run" if status in ("finished", "failed") else "run"
    saved = _read_config(path / "config.yaml")
    checkpoint = _read_checkpoint(path / "last.pt")
    stored = (checkpoint or {}).get("identity")
    if stored:
        if saved is not None:  # config.yaml must describe the run last.pt holds
            edited = identity_differences(stored, run_identity(saved, None, None))
            if edited:
                raise UsageError(
                    f"{path / 'config.yaml'} disagrees with last.pt ({'; '.join(edited)}); restore it, delete "
                    "it (last.pt keeps the run's identity), or pass force=true to train the run again."
                )
        old = stored
    elif saved is not None:  # a run from before identities were stored in last.pt
        old = run_identity(saved, (summary or {}).get("world_size"), _device_type(summary))
    elif checkpoint is not None or done:
        raise UsageError(
            f"{path} holds a {what} but neither config.yaml nor an identity in last.pt says which config "
            "made it; restore config.yaml, or pass force=true to train the run again from scratch."
        )
    else:
        old = None
    if old is not None:
        diff = identity_differences(old, identity)
        if diff:
            raise _refuse(path, diff, what)
    if checkpoint is not None:
        _check_logs(path, checkpoint, old)
    return summary if done else None


def prepare_run_dir(cfg: DictConfig, path: Path, identity: dict[str, Any]) -> dict | None:
    """Under the run's lock: restart (force: delete the run's files), skip (return the finished or failed
    run's summary) or start/resume (return None); remove stale temporary files; write config.yaml."""
    if cfg.get("force", False):
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        for extra in path.glob("*.pt"):  # mid-epoch checkpoints and any other saved state
            extra.unlink(missing_ok=True)
    else:
        skipped = check_run_dir(path, identity)
        if skipped is not None:
            return skipped
        _warn_on_new_torch(path)
        before = read_json(path / "summary.json")
        if isinstance(before, dict) and before.get("status") == "failed":
            print(f"{path} failed earlier ({before.get('reason')}); resuming it from last.pt", flush=True)
    stale = remove_stale_temporaries(path)
    if stale:
        print(f"removed {len(stale)} stale temporary file(s) from {path}: {', '.join(stale)}", flush=True)
    write_config(cfg, path / "config.yaml")
    return None


def _warn_on_new_torch(path: Path) -> None:
    """Versions are not part of the identity (a cluster's upgrade must not strand half-done runs), but a
    resume under another torch may differ from an uninterrupted run in rounding: say so."""
    before = ((read_json(path / "summary.json") or {}).get("versions") or {}).get("torch")
    if before and before != torch.__version__:
        print(
            f"warning: {path} was started with torch {before}; resuming it with torch {torch.__version__} "
            "(results may differ from an uninterrupted run in rounding).",
            flush=True,
        )


def _make_dir(path: Path) -> list[Path]:
    """``mkdir -p path``; return the folders it created, deepest first (to remove them again on a refusal)."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"Cannot create the run directory {path} ({one_line(error)}); set runs_root to a writable folder."
        ) from error
    return created


def _claim(cfg: DictConfig, path: Path, identity: dict[str, Any], lock: RunLock) -> dict | None:
    """Create and lock the run directory, then prepare it; on a refusal leave no folder behind."""
    created = _make_dir(path)
    try:
        try:
            lock.acquire()
            return prepare_run_dir(cfg, path, identity)
        except OSError as error:  # a read-only runs root, no permission, a full disk
            raise UsageError(
                f"Cannot write to the run directory {path} ({one_line(error)}); make runs_root writable "
                "(a read-only copy of a sweep can only report its finished runs)."
            ) from error
    except BaseException:
        lock.release()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _mark_diverged(path: Path) -> None:
    summary = read_json(path / "summary.json")
    if isinstance(summary, dict) and summary.get("status") == "failed":
        summary["diverged"] = True
        with contextlib.suppress(OSError):
            write_json(summary, path / "summary.json")


def _precheck(cfg: DictConfig, path: Path, identity: dict[str, Any]) -> dict | None:
    """check_run_dir before anything is built; a finished run counts as done here only when its data was
    read from the same dataset.root (else the data is built and fingerprinted, and checked under the lock)."""
    summary = check_run_dir(path, identity)
    if summary is None:
        return None
    try:
        saved = _read_config(path / "config.yaml") or {}
    except UsageError:
        return None
    before = (saved.get("dataset") or {}).get("root") if isinstance(saved.get("dataset"), dict) else None
    return summary if before == cfg.dataset.get("root") else None


def _resolve_all(cfg: DictConfig) -> None:
    """Resolve every interpolation once, so that a group option needing a key another choice lacks (e.g.
    task=segmentation with the digits data set) is one sentence naming the key, not a traceback."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        why = one_line(error).split(" full_key:")[0]
        raise UsageError(
            f"The config cannot be resolved at {key} ({why}); the chosen options do not fit together "
            "(e.g. a task whose settings come from a data set that does not define them): choose a "
            "matching model, dataset and task."
        ) from error


def mark_failed(path: Path, error: BaseException) -> None:
    """Record an exception that ended a run: summary.json ``running`` becomes ``failed`` with a one-line
    reason (a summary the trainer already finalised is left alone)."""
    summary = read_json(path / "summary.json")
    if not summary or summary.get("status") != "running":
        return
    summary["status"] = "failed"
    summary["reason"] = f"{type(error).__name__}: {one_line(error)}"[:400]
    summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(summary, path / "summary.json")


# ---------------------------------------------------------------------- building (writes nothing)


@contextlib.contextmanager
def _settings(section: str) -> Iterator[None]:
    """A ValueError/TypeError while building from ``section`` is a setting to fix: a UsageError that
    names the section unless the message already names a key."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as error:
        text = one_line(error)
        raise UsageError(text if _SECTION_KEY.search(text) else f"{section} settings: {text}") from error


def _check_loader_keys(data: DictConfig) -> None:
    """Batch sizes and worker counts named by their own keys (torch's messages say ``batch_size`` for both)."""
    for key, least in (("batch_size", 1), ("eval_batch_size", 1), ("num_workers", 0)):
        value = data.get(key)
        if key == "num_workers" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(
                f"dataset.{key}={value!r} must be a whole number >= {least}; pass e.g. dataset.{key}="
                f"{max(least, 1) if key != 'num_workers' else 0}."
            )


def _pin_memory(data: DictConfig, device: torch.device) -> bool:
    """Whether the DataLoaders pin host memory: on CUDA unless dataset.pin_memory=false; never on other
    devices (a CPU run has no copy to speed up)."""
    return device.type == "cuda" and data.get("pin_memory", True)


def _build_data(cfg: DictConfig):
    from data import DatasetNotFoundError, build_datasets

    data = cfg.dataset
    try:
        with _settings("dataset"):
            return build_datasets(data.name, **dataset_kwargs(data))
    except DatasetNotFoundError:
        raise
    except OSError as error:  # urllib's URLError is an OSError: a download that could not reach its server
        if not (isinstance(error, urllib.error.URLError) or data.get("download", False)):
            raise
        reason = one_line(getattr(error, "reason", error))
        raise UsageError(
            f"dataset.download=true could not fetch {data.name} into dataset.root={data.get('root')} "
            f"({reason}); check the network or proxy, or put the files there yourself and set "
            "dataset.download=false."
        ) from error


def build_trainer(
    cfg: DictConfig,
    seed: int,
    tcfg: TrainerConfig,
    dist: DistInfo,
    path: Path,
    identity: dict[str, Any],
    hooks: Hooks | None = None,
) -> Trainer:
    """Data, task, model, optimizer, loaders, schedule and the Trainer, every setting checked; no file written."""
    from experiments.tasks import build_task
    from models import build_model

    _check_loader_keys(cfg.dataset)
    seed_everything(seed, tcfg.deterministic)
    bundle = _build_data(cfg)
    root = cfg.dataset.get("root")
    identity.update(data_identity(bundle, f"dataset {cfg.dataset.name}" + (f" at {root}" if root else "")))
    with _settings("task"):
        task = build_task(cfg.task.name, num_classes=bundle.num_classes, **task_kwargs(cfg.task))
    seed_everything(seed, tcfg.deterministic)  # model init independent of the data code
    with _settings("model"):
        model = build_model(cfg.model.name, num_classes=bundle.num_classes, **model_kwargs(cfg.model))
    model.to(dist.device)
    with _settings("optimizer"):
        optimizer = build_optimizer(model, cfg.optimizer)
        interval = hessian_update_interval(cfg.optimizer)

    data = cfg.dataset
    pin = _pin_memory(data, dist.device)
    device_loader = getattr(bundle, "device_loader", None)
    train_eval = None  # the training set as an evaluation loader, for trainer.full_loss_* (probes.py)
    with _settings("dataset"):
        if data.get("device_resident", False):
            if device_loader is None:
                raise UsageError(
                    f"dataset.device_resident=true but dataset {data.name!r} offers no device-resident "
                    "loader; set dataset.device_resident=false."
                )
            shard = {"num_replicas": dist.world_size, "rank": dist.rank} if dist.enabled else {}
            train = DeviceEpochLoader(
                device_loader, data.batch_size, data.drop_last, dist.device, seed, dist.rank, dist.world_size
            )
            evals = device_loader(
                "eval", data.eval_batch_size, False, False, dist.device, torch.Generator(dist.device), **shard
            )
        else:
            train = train_loader(
                bundle.train,
                task.collate,
                data.batch_size,
                seed,
                data.num_workers,
                data.drop_last,
                dist.rank,
                dist.world_size,
                pin,
            )
            if tcfg.full_loss_steps or tcfg.full_loss_at_eval:
                train_eval = eval_loader(
                    bundle.train, task.collate, data.eval_batch_size, data.num_workers, dist.rank, dist.world_size, pin
                )
            evals = eval_loader(
                bundle.eval,
                task.collate,
                data.eval_batch_size,
                data.num_workers,
                dist.rank,
                dist.world_size,
                pin,
            )
    if len(train) == 0:
        raise UsageError(
            f"The training set ({len(bundle.train)} samples) gives no full batch of dataset.batch_size="
            f"{data.batch_size}; lower the batch size or set dataset.drop_last=false."
        )

    with _settings("schedule"):
        sched = OmegaConf.to_container(cfg.schedule, resolve=True)
        lr_factor = build_lr_factor(
            sched.pop("name"), peak=float(cfg.optimizer.lr), total_steps=len(train) * tcfg.epochs, **sched
        )
    info = {
        "run_dir": str(path),
        "experiment": cfg.experiment_name,
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "dataset": cfg.dataset.name,
        "task": cfg.task.name,
        "seed": seed,
        "optimizer_path": adamx.active_path(optimizer),  # what optimizer.fused=auto resolved to: fused, foreach, ...
    }
    with _settings("trainer"):
        return Trainer(
            task=task,
            model=model,
            optimizer=optimizer,
            train_data=train,
            eval_data=evals,
            lr_factor=lr_factor,
            run_dir=path,
            config=tcfg,
            dist=dist,
            hessian_interval=interval,
            batch_factor=interval is not None and cfg.optimizer.get("bs") is None,
            hooks=hooks,
            info=info,
            identity=identity,
            seed=seed,
            train_eval_data=train_eval,
        )


# ---------------------------------------------------------------------- the run


def run_experiment(
    cfg: DictConfig, overrides: Sequence[str] = (), hooks: Hooks | None = None
) -> dict[str, Any]:
    """Train the run ``cfg`` describes (resuming or skipping as its directory says); return its summary
    (``{}`` on DDP ranks other than 0). Bad settings and untrustworthy directories raise UsageError."""
    _resolve_all(cfg)
    cfg = apply_per_optimizer(cfg, overrides)
    seed = seed_value(cfg)
    tcfg = trainer_config(cfg.trainer)
    dist = devices.setup(tcfg.device, tcfg.jobs_per_gpu, tcfg.dist_timeout_min)
    try:
        path = run_dir(cfg)
        identity = run_identity(cfg, dist.world_size, dist.device.type)
        if not cfg.get("force", False):  # a finished run read from the same data is skipped unbuilt
            skipped = collectives.run_on_main(lambda: _precheck(cfg, path, identity))
            if skipped is not None:
                return {**skipped, "skipped": True} if dist.is_main else {}
        trainer = build_trainer(cfg, seed, tcfg, dist, path, identity, hooks)
        lock = RunLock(path)
        try:
            skipped = collectives.run_on_main(lambda: _claim(cfg, path, identity, lock))
            if skipped is not None:  # another process finished it meanwhile
                return {**skipped, "skipped": True} if dist.is_main else {}
            try:
                return trainer.fit()
            except (KeyboardInterrupt, RunInterrupted):
                raise  # the trainer recorded these
            except TrainingFailed:
                if dist.is_main:  # recorded by the trainer; a rerun reports it instead of diverging again
                    _mark_diverged(path)
                raise
            except Exception as error:
                if not trainer.summary and dist.is_main:
                    # Raised while resuming, before this session wrote its first summary: the run is as
                    # the last session left it (interrupted, or killed while running), not failed.
                    if isinstance(error, ValueError):  # e.g. last.pt from another number of steps per epoch
                        raise UsageError(one_line(error)) from error
                    raise
                if dist.is_main:
                    with contextlib.suppress(OSError):  # a full disk must not hide the original error
                        mark_failed(path, error)
                raise
        finally:
            lock.release()  # a no-op on ranks other than 0, which never lock
    finally:
        devices.teardown(dist)
