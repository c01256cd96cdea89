"""What a run directory's records say, value by value, in-process: the refusals of check_run_dir (missing
logs, unreadable last.pt), the device and torch-version notes, download errors, and the exact bytes of
summary.json / config.yaml / the provenance fields."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import data as data_package
from experiments import launch, rundir
from experiments.errors import UsageError

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
    (tmp_path / "train.csv").write_text("step\n")
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
    rundir.write_json(
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
    rundir.write_json({"b": 1, "a": [1, 2], "p": Path("/x")}, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ],\n  "p": "/x"\n}'


def test_config_yaml_is_written_resolved(tmp_path):
    """config.yaml records values, not interpolations a later edit could change."""
    cfg = OmegaConf.create({"lr": 0.5, "name": "lr_${lr}"})
    rundir.write_config(cfg, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == "lr: 0.5\nname: lr_0.5\n"


def test_versions_record_the_python_and_torch_that_ran():
    got = rundir.versions()
    assert got["python"] == platform.python_version() and got["torch"] == torch.__version__


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_is_the_checkouts_head_marked_dirty_and_none_outside_git(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "experiments").mkdir(parents=True)
    monkeypatch.setattr(rundir, "__file__", str(repo / "experiments" / "rundir.py"))
    assert rundir.git_commit() is None  # not a git checkout
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("1\n")
    _git(repo, "add", "f.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert rundir.git_commit() == head
    (repo / "f.txt").write_text("2\n")
    assert rundir.git_commit() == head + "-dirty"


def test_rundir_works_without_omegaconf(monkeypatch):
    """adamx installed without the harness extra: rundir still imports (no resolver to register)."""
    monkeypatch.setitem(__import__("sys").modules, "omegaconf", None)
    spec = importlib.util.spec_from_file_location("rundir_without_omegaconf", rundir.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OmegaConf is None and module.path_safe("adam+adax") == "adam_adax"
    assert json.loads(json.dumps(module.versions()))["torch"] == torch.__version__
