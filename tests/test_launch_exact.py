"""The launch side's clean-up paths, in-process and value by value: a refused run leaves no folder and no
lock behind, a failure is recorded once with a bounded reason, and Hydra's log of a refused command is
swept up to (not including) runs_root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import compose_config

from experiments import launch
from experiments.errors import UsageError
from experiments.rundir import remove_if_only
from experiments.runlock import LOCK_NAME, RunLock


def test_a_refused_claim_removes_the_folders_it_made_and_its_lock(tmp_path, monkeypatch):
    """A refusal inside _claim releases the lock and removes exactly the folders it created, deepest first."""
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "exp" / "model" / "opt" / "seed0"

    def refuse(cfg, p, identity):
        assert (p / LOCK_NAME).exists()  # the lock is held while the directory is prepared
        raise UsageError("refused")

    monkeypatch.setattr(launch, "prepare_run_dir", refuse)
    with pytest.raises(UsageError, match="refused"):
        launch._claim(None, path, {}, RunLock(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert list((tmp_path / "runs").iterdir()) == []  # runs existed before: kept, and empty again


def test_a_refused_claim_keeps_a_folder_that_existed(tmp_path, monkeypatch):
    """Only folders the claim created are removed: an existing run directory (and its files) stays."""
    path = tmp_path / "seed0"
    path.mkdir()
    (path / "train.csv").write_text("step\n")
    monkeypatch.setattr(launch, "prepare_run_dir", lambda *a: (_ for _ in ()).throw(UsageError("no")))
    with pytest.raises(UsageError):
        launch._claim(None, path, {}, RunLock(path))
    assert sorted(p.name for p in path.iterdir()) == ["train.csv"]  # lock file gone, data kept


def test_a_successful_claim_holds_the_lock(tmp_path, monkeypatch):
    """After a claim the directory is locked: a second claimant is refused until the first releases."""
    path = tmp_path / "seed0"
    monkeypatch.setattr(launch, "prepare_run_dir", lambda cfg, p, identity: {"resume": True})
    lock = RunLock(path)
    assert launch._claim(None, path, {}, lock) == {"resume": True}
    with pytest.raises(UsageError, match="in use by another process"):
        RunLock(path).acquire()
    lock.release()
    RunLock(path).acquire().release()


def _summary(path: Path, **fields) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"status": "running", "epoch": 3, **fields}))
    return path / "summary.json"


def test_mark_failed_records_type_and_a_400_character_reason(tmp_path):
    """running -> failed, with 'Type: message' cut at exactly 400 characters; the other fields stay."""
    summary = _summary(tmp_path / "run")
    launch.mark_failed(tmp_path / "run", ValueError("x" * 1000))
    got = json.loads(summary.read_text())
    assert got["status"] == "failed" and got["epoch"] == 3
    assert got["reason"] == ("ValueError: " + "x" * 1000)[:400] and len(got["reason"]) == 400
    assert got["updated"]
    launch.mark_failed(tmp_path / "run", RuntimeError("short"))  # already failed: left alone
    assert json.loads(summary.read_text())["reason"].startswith("ValueError: xxx")


@pytest.mark.parametrize("status", ["finished", "interrupted"])
def test_mark_failed_leaves_a_finalised_summary_alone(tmp_path, status):
    """A summary the trainer already finalised is not overwritten by a later exception."""
    summary = _summary(tmp_path / "run", status=status)
    before = summary.read_bytes()
    launch.mark_failed(tmp_path / "run", RuntimeError("late"))
    assert summary.read_bytes() == before


def test_mark_failed_without_a_summary_writes_nothing(tmp_path):
    (tmp_path / "run").mkdir()
    launch.mark_failed(tmp_path / "run", RuntimeError("early"))
    assert list((tmp_path / "run").iterdir()) == []


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_remove_if_only_sweeps_a_log_only_folder_and_its_empty_parents_up_to_stop(tmp_path):
    """Hydra's log of a refused command goes, with the parents it leaves empty, but never runs_root."""
    stop = tmp_path / "runs"
    leaf = stop / "exp" / "model" / "opt" / "seed0"
    leaf.mkdir(parents=True)
    (leaf / "run.log").write_text("refused\n")
    (stop / "exp" / "other").mkdir()  # keeps exp/ alive
    remove_if_only(leaf, ["run.log"], stop)
    assert _tree(tmp_path) == ["runs", "runs/exp", "runs/exp/other"]
    lone = stop / "lone" / "seed1"
    lone.mkdir(parents=True)
    (lone / "run.log").write_text("")
    remove_if_only(lone, ["run.log"], stop)
    assert _tree(tmp_path) == ["runs", "runs/exp", "runs/exp/other"]  # up to, not including, runs


@pytest.mark.parametrize("extra", ["train.csv", "folder"])
def test_remove_if_only_keeps_a_folder_with_anything_else(tmp_path, extra):
    """Any other file, or a sub-folder (even one named like the log), keeps the folder and its log."""
    leaf = tmp_path / "runs" / "seed0"
    leaf.mkdir(parents=True)
    (leaf / "run.log").write_text("")
    if extra == "folder":
        (leaf / "sub").mkdir()
        (leaf / "sub" / "run.log").mkdir()
    else:
        (leaf / extra).write_text("")
    before = _tree(tmp_path)
    remove_if_only(leaf, ["run.log"], tmp_path / "runs")
    remove_if_only(leaf / "sub" if extra == "folder" else leaf, ["run.log"], tmp_path / "runs")
    assert _tree(tmp_path) == before


def test_remove_if_only_never_climbs_outside_stop(tmp_path):
    """A folder that is not under stop: its log goes, but no folder is removed."""
    leaf = tmp_path / "elsewhere" / "seed0"
    leaf.mkdir(parents=True)
    (leaf / "run.log").write_text("")
    (tmp_path / "runs").mkdir()
    remove_if_only(leaf, ["run.log"], tmp_path / "runs")
    assert _tree(tmp_path) == ["elsewhere", "elsewhere/seed0", "runs"]


def test_remove_if_only_on_a_missing_folder_does_nothing(tmp_path):
    remove_if_only(tmp_path / "nope", ["run.log"], tmp_path)
    assert os.listdir(tmp_path) == []


class _LoadersBuilt(Exception):
    pass


@pytest.mark.parametrize("pin_setting", [True, False])
def test_cpu_runs_never_pin_memory_whatever_dataset_pin_memory_says(tmp_path, monkeypatch, pin_setting):
    """Catches 'cuda and pin_memory' turned into 'or': a CPU run would ask DataLoader to pin (a warning
    per loader on machines without CUDA, pinned pages on machines with one)."""
    seen = {}
    real_train_loader = launch.train_loader

    def train_loader(*args):
        seen["train"] = args[-1]
        return real_train_loader(*args)

    def eval_loader(*args):
        seen["eval"] = args[-1]
        raise _LoadersBuilt

    monkeypatch.setattr(launch, "train_loader", train_loader)
    monkeypatch.setattr(launch, "eval_loader", eval_loader)
    cfg = compose_config(
        [f"runs_root={tmp_path}", "trainer.device=cpu", f"++dataset.pin_memory={str(pin_setting).lower()}"]
    )
    with pytest.raises(_LoadersBuilt):
        launch.run_experiment(cfg)
    assert seen == {"train": False, "eval": False}
