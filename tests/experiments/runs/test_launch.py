"""The launch side's clean-up paths, in-process and value by value: a refused run leaves no folder and no
lock behind, a failure is recorded once with a bounded reason, and Hydra's log of a refused command is
swept up to (not including) runs_root.

What a run directory's records say, value by value, in-process: the refusals of check_run_dir (missing
logs, unreadable last.pt), the device and torch-version notes, download errors, and the exact bytes of
summary.json / config.yaml / the provenance fields."""

from __future__ import annotations

import json
import os
from pathlib import Path
import pytest
from tests.helpers import compose_config
from experiments.runs import launch
from experiments.train.errors import UsageError
from experiments.runs.rundir import remove_if_only
from experiments.runs.runlock import LOCK_NAME, RunLock
import importlib.util
import platform
import subprocess
import urllib.error
import torch
from omegaconf import OmegaConf
import data as data_package
from experiments.runs import launch, rundir
from experiments.train import files, provenance

# ---------------------------------------------------------------- from test_launch_exact.py: The launch side's clean-up paths, in-process and value by value: a refused run l






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


# ---------------------------------------------------------------- from test_run_dir_records.py: What a run directory's records say, value by value, in-process: the refusals of 





IDENTITY = {"optimizer": {"name": "adamx", "lr": 0.001}, "seed": 0}


def _last_pt(path: Path, **fields) -> None:
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "identity": IDENTITY, **fields}, path / "last.pt")


def test_last_pt_past_step_zero_needs_train_csv(tmp_path):
    """A checkpoint at step 5 without train.csv is refused with its epoch, step and the file named."""
    _last_pt(tmp_path, step=5)
    with pytest.raises(
        UsageError, match=r"holds last.pt \(epoch 1, step 5\) but not train.csv, .*restore it,"
    ):
        launch.check_run_dir(tmp_path, IDENTITY)
    (tmp_path / "train.csv").write_text("step\n")  # emptied: fault campaign item 1
    with pytest.raises(UsageError, match=r"but train.csv holds 0 of its 5 rows \(emptied or cut short\)"):
        launch.check_run_dir(tmp_path, IDENTITY)
    (tmp_path / "train.csv").write_text("step\n" + "".join(f"{s}\n" for s in range(1, 6)))
    assert launch.check_run_dir(tmp_path, IDENTITY) is None


def test_a_final_checkpoint_needs_both_logs(tmp_path):
    _last_pt(tmp_path, step=9, final=True)
    with pytest.raises(UsageError, match=r"but not train.csv or eval.csv, .*restore them,"):
        launch.check_run_dir(tmp_path, IDENTITY)


@pytest.mark.parametrize("fields", [{"step": 0}, {}], ids=["step 0", "no step recorded"])
def test_a_checkpoint_before_the_first_step_needs_no_log(tmp_path, fields):
    """At step 0 (or a checkpoint that records none) no row has been logged yet: nothing to miss."""
    _last_pt(tmp_path, **fields)
    assert launch.check_run_dir(tmp_path, IDENTITY) is None


class _NotAllowed:
    pass


def test_a_last_pt_with_arbitrary_objects_is_not_unpickled(tmp_path):
    """last.pt is read weights_only: a pickled object is refused (by sentence), never executed."""
    tmp_path.mkdir(exist_ok=True)
    torch.save({"step": 0, "thing": _NotAllowed()}, tmp_path / "last.pt")
    with pytest.raises(UsageError, match=r"last.pt cannot be read, it is truncated or corrupt \("):
        launch.check_run_dir(tmp_path, IDENTITY)


def test_an_unreadable_last_pt_names_the_first_sentence_of_the_error_cut_at_100(tmp_path, monkeypatch):
    (tmp_path / "last.pt").write_bytes(b"x")

    def fail(*args, **kwargs):
        raise RuntimeError("A" * 300 + ". The rest")

    monkeypatch.setattr(launch.torch, "load", fail)
    with pytest.raises(UsageError) as info:
        launch.check_run_dir(tmp_path, IDENTITY)
    assert f"corrupt ({'A' * 100}); pass force=true" in str(info.value)
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(UsageError, match=r"corrupt \(it is empty\); pass force=true"):
        launch.check_run_dir(tmp_path, IDENTITY)


@pytest.mark.parametrize(
    "summary, expected",
    [(None, None), ({}, None), ({"device": "cuda:1"}, "cuda"), ({"device": "cpu (2 threads)"}, "cpu")],
)
def test_device_type_of_a_summary(summary, expected):
    assert launch._device_type(summary) == expected


@pytest.mark.parametrize(
    "versions, warns", [(None, False), ({"torch": torch.__version__}, False), ({"torch": "1.0"}, True)]
)
def test_a_resume_under_another_torch_is_announced(tmp_path, capsys, versions, warns):
    """Only a recorded, different torch version prints the warning (a summary without versions does not)."""
    files.write_json(
        {"status": "running", **({"versions": versions} if versions else {})}, tmp_path / "summary.json"
    )
    launch._warn_on_new_torch(tmp_path)
    out = capsys.readouterr().out
    assert (f"was started with torch 1.0; resuming it with torch {torch.__version__}" in out) is warns
    assert bool(out) is warns


def _dataset_cfg(**fields):
    return OmegaConf.create({"dataset": {"name": "digits", **fields}})


@pytest.mark.parametrize(
    "error, fields, becomes_usage",
    [
        (OSError("disk"), {}, False),  # a plain I/O error with no download asked: raised as it is
        (urllib.error.URLError("refused"), {}, True),  # could not reach a server: one sentence
        (OSError("reset"), {"download": True}, True),  # any I/O error while downloading: one sentence
        (OSError("disk"), {"download": False}, False),
    ],
)
def test_download_errors_become_one_sentence(monkeypatch, error, fields, becomes_usage):
    def fail(name, **kwargs):
        raise error

    monkeypatch.setattr(data_package, "build_datasets", fail)
    expected = UsageError if becomes_usage else OSError
    with pytest.raises(expected) as info:
        launch._build_data(_dataset_cfg(**fields))
    if becomes_usage:
        assert str(info.value).startswith(
            "dataset.download=true could not fetch digits into dataset.root=None ("
        )
    else:
        assert info.value is error


def test_summary_json_is_written_with_two_space_indent_in_insertion_order(tmp_path):
    files.write_json({"b": 1, "a": [1, 2], "p": Path("/x")}, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ],\n  "p": "/x"\n}'


def test_config_yaml_is_written_resolved(tmp_path):
    """config.yaml records values, not interpolations a later edit could change."""
    cfg = OmegaConf.create({"lr": 0.5, "name": "lr_${lr}"})
    rundir.write_config(cfg, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == "lr: 0.5\nname: lr_0.5\n"


def test_versions_record_the_python_and_torch_that_ran():
    got = provenance.versions()
    assert got["python"] == platform.python_version() and got["torch"] == torch.__version__


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_is_the_checkouts_head_marked_dirty_and_none_outside_git(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "experiments" / "train").mkdir(parents=True)
    monkeypatch.setattr(provenance, "__file__", str(repo / "experiments" / "train" / "provenance.py"))
    assert provenance.git_commit() is None  # not a git checkout
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("1\n")
    _git(repo, "add", "f.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_commit() == head
    (repo / "f.txt").write_text("2\n")
    assert provenance.git_commit() == head + "-dirty"


def test_the_training_layer_works_without_omegaconf(monkeypatch):
    """The trainer's files and provenance need no omegaconf (the bare GPU image has none); the run-directory
    rule, which registers Hydra's resolver, lives in the run layer."""
    import sys

    monkeypatch.setitem(sys.modules, "omegaconf", None)
    for name in [n for n in sys.modules if n.startswith("experiments.train")]:
        monkeypatch.delitem(sys.modules, name)
    trainer = importlib.import_module("experiments.train.trainer")
    assert trainer.Trainer is not None
    module = importlib.import_module("experiments.train.provenance")
    assert json.loads(json.dumps(module.versions()))["torch"] == torch.__version__


def test_loader_keys_accept_their_least_values_and_name_what_is_below():
    """batch_size and eval_batch_size >= 1 and num_workers >= 0 (or unset): the least values are accepted;
    one below is refused naming the key and its least value."""
    least = {"batch_size": 1, "eval_batch_size": 1, "num_workers": 0}
    launch._check_loader_keys(OmegaConf.create(least))
    launch._check_loader_keys(OmegaConf.create({"batch_size": 1, "eval_batch_size": 1}))  # workers unset
    for key, value in least.items():
        with pytest.raises(UsageError, match=rf"dataset\.{key}={value - 1} must be a whole number >= {value};"):
            launch._check_loader_keys(OmegaConf.create({**least, key: value - 1}))


def test_cuda_runs_pin_memory_unless_the_dataset_says_not_to():
    """Pinned host memory speeds the copy to a GPU: on by default for CUDA (no dataset.pin_memory key),
    off with dataset.pin_memory=false, never for a CPU run (torch.device needs no GPU to be named)."""
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert launch._pin_memory(OmegaConf.create({"batch_size": 8}), cuda) is True
    assert launch._pin_memory(OmegaConf.create({"pin_memory": False}), cuda) is False
    assert launch._pin_memory(OmegaConf.create({"pin_memory": True}), cpu) is False
    assert launch._pin_memory(OmegaConf.create({}), cpu) is False


def test_evaluated_epochs_are_unknown_unless_both_eval_every_and_epochs_are_known():
    """eval.csv's expected row count needs trainer.eval_every and trainer.epochs (the last epoch is always
    evaluated); with either missing or not an integer the check is skipped (None), never guessed."""
    from experiments.runs.launch import _evaluated_epochs

    assert _evaluated_epochs(5, {"trainer.eval_every": 2, "trainer.epochs": 5}) == 3  # epochs 2, 4 and 5
    assert _evaluated_epochs(5, {"trainer.eval_every": 2}) is None
    assert _evaluated_epochs(5, {"trainer.eval_every": 2, "trainer.epochs": "5"}) is None
    assert _evaluated_epochs(5, {"trainer.eval_every": None, "trainer.epochs": 5}) is None
    assert _evaluated_epochs(5, {"trainer.eval_every": 0, "trainer.epochs": 5}) is None
    assert _evaluated_epochs(5, None) is None
