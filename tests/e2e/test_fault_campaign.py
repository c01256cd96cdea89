"""The failures a hostile fault campaign found (issue 26), each reproduced: logs cut short beside last.pt, a
failed run that could never be resumed, a full disk, other data behind the same dataset.root, run
directories of the previous release, a read-only runs root, a second Ctrl-C right after last.pt's rename,
and bad input that gave tracebacks or left files behind. (The lock deleted under its holder is in
tests/experiments/runs/test_runlock.py, odd summary.json files in tests/scripts/test_sweep_status.py and
tests/experiments/runs/test_gpu_slots.py.)"""

import errno
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

import run
from experiments.runs import launch
from experiments.runs.identity import identity_differences
from experiments.runs.rundir import run_dir
from experiments.train import files
from experiments.train.errors import UsageError
from experiments.train.files import read_json, write_json
from experiments.train.trainer import Hooks, Trainer
from tests.e2e.test_fault_injection import (
    STEPS,
    assert_same_run,
    at_step,
    load,
    make_cfg,
    send,
)
from tests.helpers import cifar_fixture_overrides, compose_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread_module):
    """The uninterrupted run (as in test_fault_injection.py)."""
    cfg, overrides = make_cfg(tmp_path_factory.mktemp("straight"))
    summary = launch.run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    return run_dir(cfg)


def stop_after_epoch(n: int) -> Hooks:
    """A first Ctrl-C (KeyboardInterrupt) at the end of epoch ``n``: the run is interrupted there."""

    def hook(trainer, epoch):
        if epoch == n:
            raise KeyboardInterrupt

    return Hooks(on_epoch_end=hook)


def interrupted_after_epoch_1(root: Path, *extra: str) -> tuple:
    cfg, overrides = make_cfg(root, *extra)
    with pytest.raises(KeyboardInterrupt):
        launch.run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    path = run_dir(cfg)
    assert (
        read_json(path / "summary.json")["status"] == "interrupted" and load(path / "last.pt")["step"] == 12
    )
    return cfg, overrides, path


# ---------------------------------------------------------------------- 1. logs cut short beside last.pt


@pytest.mark.parametrize("keep", [0, 5, 11], ids=["emptied", "5 of 12 rows", "11 of 12 rows"])
def test_a_train_csv_cut_short_is_refused_on_resume(tmp_path, keep):
    cfg, overrides, path = interrupted_after_epoch_1(tmp_path)
    lines = (path / "train.csv").read_text().splitlines(keepends=True)
    (path / "train.csv").write_text("".join(lines[: 1 + keep]) if keep else "")
    with pytest.raises(
        UsageError, match=rf"but train.csv holds {keep} of its 12 rows \(emptied or cut short\)"
    ):
        launch.run_experiment(cfg, overrides)
    assert len((path / "train.csv").read_text().splitlines()) == (1 + keep if keep else 0)  # left as it was


def test_an_eval_csv_missing_a_row_is_refused(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        launch.run_experiment(cfg, overrides, hooks=stop_after_epoch(2))
    path = run_dir(cfg)
    lines = (path / "eval.csv").read_text().splitlines(keepends=True)
    (path / "eval.csv").write_text(lines[0] + lines[2])  # epoch 1's row gone
    with pytest.raises(UsageError, match=r"eval.csv holds 1 of its 2 rows"):
        launch.run_experiment(cfg, overrides)


# ---------------------------------------------------------------------- 2. a failed run resumes


def test_a_failed_run_resumes_from_last_pt_with_the_same_command(tmp_path, reference, capsys):
    """An OSError (or out-of-memory error) fails the run; last.pt is the last commit before it, so the same
    command resumes from there, to the uninterrupted run's result bit for bit."""

    def disk_trouble(trainer):
        raise OSError(errno.EIO, "Input/output error")

    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(OSError):
        launch.run_experiment(cfg, overrides, hooks=at_step(17, disk_trouble))
    path = run_dir(cfg)
    assert read_json(path / "summary.json")["status"] == "failed"
    assert load(path / "last.pt")["step"] == 12
    summary = launch.run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and not summary.get("skipped")
    assert "failed earlier (OSError: [Errno 5] Input/output error); resuming it from last.pt" in (
        capsys.readouterr().out
    )
    assert_same_run(reference, path)


def test_a_failed_run_with_a_changed_setting_says_how_to_change_it_on_purpose(tmp_path):
    def oom(trainer):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        launch.run_experiment(cfg, overrides, hooks=at_step(17, oom))
    smaller, smaller_overrides = make_cfg(tmp_path, "dataset.batch_size=16")
    with pytest.raises(
        UsageError,
        match=r"holds a failed run made with a different config \(dataset.batch_size: 32 -> 16\); "
        r"re-run the same command to resume it from last.pt, pass force=true to train it again "
        r"from scratch with the new settings",
    ):
        launch.run_experiment(smaller, smaller_overrides)
    smaller.force = True
    assert launch.run_experiment(smaller, smaller_overrides)["status"] == "finished"


def test_a_diverged_run_stays_failed_and_is_marked_so(tmp_path):
    """A non-finite loss is the run's result (the optimizer diverged with these settings): the same
    command reports it; summary.json says diverged."""

    def poison(trainer):
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))

    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(Exception, match="loss became nan"):
        launch.run_experiment(cfg, overrides, hooks=at_step(14, poison))
    assert read_json(run_dir(cfg) / "summary.json")["diverged"] is True
    again = launch.run_experiment(cfg, overrides)
    assert again["skipped"] and again["status"] == "failed"


# ---------------------------------------------------------------------- 3. a full disk


class FullDisk:
    """A file on a disk with ``room`` bytes left: the writes that fit succeed, the next one fails with
    ENOSPC, and close() has nothing left to flush. torch.save then reports "[enforce fail at
    inline_container.cc] unexpected pos" when some of its writes got through (as on a real full disk)."""

    def __init__(self, mode: str, room: int = 1000) -> None:
        self.room = room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def full_disk_for(name: str, monkeypatch) -> list:
    """Writes of ``name`` go to a FullDisk; the others go through."""
    real_fdopen = os.fdopen
    hits = []

    def fdopen(fd, *args, **kwargs):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}."):
            hits.append(target)
            os.close(fd)
            return FullDisk(args[0] if args else kwargs.get("mode", "r"))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(files.os, "fdopen", fdopen)
    return hits


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_full_disk_is_one_sentence_and_the_previous_last_pt_survives(
    tmp_path, reference, monkeypatch, capsys
):
    cfg, overrides = make_cfg(tmp_path)
    hits = []

    def fill_disk(trainer):  # the disk fills up during epoch 2: its last.pt cannot be written
        hits.append(full_disk_for("last.pt", monkeypatch))

    monkeypatch.setattr(launch, "run_experiment", _with_hooks(launch.run_experiment, at_step(13, fill_disk)))
    assert run.execute(cfg, overrides) == 1
    err = capsys.readouterr().err.strip()
    path = run_dir(cfg)
    assert err == (
        f"failed: no space left on {path} (No space left on device); free some space and re-run the same "
        "command to resume from last.pt."
    )
    assert hits[0], "the fault was not injected"
    assert load(path / "last.pt")["step"] == 12  # epoch 1's commit, intact
    assert not list(path.glob(".*.tmp"))
    monkeypatch.undo()
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(reference, path)


@pytest.mark.parametrize("numel", [10, 100_000])
def test_a_short_write_inside_torch_save_names_the_file_not_the_zip_writer(tmp_path, monkeypatch, numel):
    """torch.save reports a failed write as "[enforce fail at inline_container.cc] unexpected pos": the
    error raised names the file and ENOSPC instead."""
    full_disk_for("last.pt", monkeypatch)
    (tmp_path / "last.pt").write_bytes(b"previous")
    with pytest.raises(OSError) as info:
        files.save_checkpoint({"w": torch.zeros(numel)}, tmp_path / "last.pt")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "last.pt")
    assert "inline_container" not in str(info.value)
    assert (tmp_path / "last.pt").read_bytes() == b"previous"
    assert not list(tmp_path.glob(".*.tmp"))


def _with_hooks(real, hooks):
    return lambda cfg, overrides, hooks=None, _hooks=hooks: real(cfg, overrides, hooks=_hooks)


# ---------------------------------------------------------------------- 4. other data behind dataset.root


@pytest.fixture(scope="module")
def cifar_roots(tmp_path_factory):
    from data.fixtures import write_fixture

    base = tmp_path_factory.mktemp("cifar")
    return {
        "a": write_fixture("cifar100", base / "a", n_train=64, n_test=32),
        "fewer": write_fixture("cifar100", base / "fewer", n_train=64, n_test=24),
        "other": write_fixture("cifar100", base / "other", n_train=64, n_test=32, seed=1),
    }


def cifar_cfg(runs, root, *extra):
    overrides = [
        f"runs_root={runs}",
        *cifar_fixture_overrides(root),
        "trainer.epochs=2",
        "trainer.progress=false",
    ]
    overrides += list(extra)
    return compose_config(overrides), overrides


def test_a_finished_run_on_other_data_is_refused_not_reported_done(tmp_path, cifar_roots):
    cfg, overrides = cifar_cfg(tmp_path, cifar_roots["a"])
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"
    assert launch.run_experiment(cfg, overrides)["skipped"]  # the same files: done
    other, other_overrides = cifar_cfg(tmp_path, cifar_roots["other"])
    with pytest.raises(
        UsageError, match=r"holds a finished run made with a different config \(data.eval_fingerprint: "
    ):
        launch.run_experiment(other, other_overrides)


@pytest.mark.parametrize("status", ["interrupted", "running"], ids=["interrupted", "killed while running"])
def test_resuming_onto_other_data_is_refused_and_the_run_stays_resumable(tmp_path, cifar_roots, status):
    cfg, overrides = cifar_cfg(tmp_path, cifar_roots["a"])
    with pytest.raises(KeyboardInterrupt):
        launch.run_experiment(cfg, overrides, hooks=stop_after_epoch(1))
    path = run_dir(cfg)
    summary = read_json(path / "summary.json")
    write_json({**summary, "status": status}, path / "summary.json")  # "running": as a kill -9 leaves it
    fewer, fewer_overrides = cifar_cfg(tmp_path, cifar_roots["fewer"])
    with pytest.raises(
        UsageError, match=r"data.eval_fingerprint: '\w+' -> '\w+'; data.eval_samples: 32 -> 24"
    ):
        launch.run_experiment(fewer, fewer_overrides)
    assert read_json(path / "summary.json")["status"] == status  # not turned into "failed"
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"  # its own data: resumes


def test_an_exception_while_resuming_leaves_a_killed_run_resumable(tmp_path, monkeypatch):
    cfg, overrides, path = interrupted_after_epoch_1(tmp_path)
    summary = read_json(path / "summary.json")
    write_json({**summary, "status": "running"}, path / "summary.json")  # a kill -9 leaves "running"

    def broken(self, state):
        raise RuntimeError("cannot load")

    monkeypatch.setattr(Trainer, "load_state_dict", broken)
    with pytest.raises(RuntimeError, match="cannot load"):
        launch.run_experiment(cfg, overrides)
    assert read_json(path / "summary.json")["status"] == "running"

    def mismatch(self, state):
        raise ValueError("last.pt was written with 12 steps per epoch and this run has 6")

    monkeypatch.setattr(Trainer, "load_state_dict", mismatch)
    with pytest.raises(UsageError, match="12 steps per epoch"):  # a sentence (exit 2), not a traceback
        launch.run_experiment(cfg, overrides)
    assert read_json(path / "summary.json")["status"] == "running"


def test_data_identity_leaves_the_random_streams_alone_and_names_unreadable_files(tmp_path):
    from experiments.runs.identity import data_identity

    class Eval:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            torch.rand(3)  # a random transform: drawn from a fixed seed, so the hash is reproducible
            if index == 4:
                raise FileNotFoundError(2, "No such file or directory", "/data/Annotations/000004.xml")
            return torch.rand(2), index

    class Bundle:
        train, eval = list(range(7)), Eval()

    before = torch.get_rng_state()
    with pytest.raises(
        UsageError, match=r"dataset voc: reading evaluation sample 4 failed \(.*000004.xml'\)"
    ):
        data_identity(Bundle, "dataset voc")
    assert torch.equal(torch.get_rng_state(), before)
    Bundle.eval.__class__.__len__ = lambda self: 4
    first, again = data_identity(Bundle, "x"), data_identity(Bundle, "x")
    assert first == again and first["data.train_samples"] == 7 and first["data.eval_samples"] == 4
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------------- 5. run directories of the previous release


def test_a_run_directory_from_before_tf32_resumes_on_a_cpu(tmp_path, reference):
    cfg, overrides, path = interrupted_after_epoch_1(tmp_path)
    state = load(path / "last.pt")
    del state["identity"]["trainer.tf32"]  # as the previous release stored it
    torch.save(state, path / "last.pt")
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(reference, path)


def test_a_key_added_later_takes_its_old_meaning():
    new = {"optimizer.lr": 0.1, "trainer.tf32": False, "trainer.device": "cpu"}
    old_cpu = {"optimizer.lr": 0.1, "trainer.device": "cpu"}
    assert identity_differences(old_cpu, new) == []
    assert identity_differences(old_cpu, {**new, "trainer.tf32": True}) == ["trainer.tf32: False -> True"]
    # On a GPU, torch's old defaults (TF32 convolutions on, matmuls off) are neither false nor true:
    old_gpu = {"optimizer.lr": 0.1, "trainer.device": "cuda"}
    assert identity_differences(old_gpu, {**new, "trainer.device": "cuda"}) == ["trainer.tf32: None -> False"]


def test_an_old_gpu_run_can_be_resumed_with_tf32_null():
    from experiments.runs.build import trainer_config

    cfg = compose_config(["trainer.tf32=null"])
    assert trainer_config(cfg.trainer).tf32 is None
    old_gpu = {"optimizer.lr": 0.1, "trainer.device": "cuda"}
    assert identity_differences(old_gpu, {**old_gpu, "trainer.tf32": None}) == []


# ---------------------------------------------------------------------- 6. a read-only runs root


def test_a_run_directory_that_cannot_be_written_is_one_sentence(tmp_path, monkeypatch):
    cfg, overrides, path = interrupted_after_epoch_1(tmp_path)
    from experiments.runs import runlock

    real_open = runlock.os.open

    def read_only(file, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(runlock.os, "open", read_only)
    with pytest.raises(
        UsageError, match=rf"Cannot write to the run directory {path} \(\[Errno 30\] Read-only"
    ):
        launch.run_experiment(cfg, overrides)
    assert read_json(path / "summary.json")["status"] == "interrupted"


def test_hydra_opens_its_run_log_only_when_something_is_logged():
    """A finished run on a read-only runs root: Hydra must not fail configuring its run.log handler before
    run.py can say "already finished" (the handler opens its file at the first record)."""
    cfg = compose_config([], hydra=True)
    assert cfg.hydra.job_logging.handlers.file.delay is True


# ---------------------------------------------------------------------- 9. a second Ctrl-C right after last.pt's rename


def test_a_second_ctrl_c_right_after_last_pt_is_renamed_leaves_a_consistent_directory(
    tmp_path, reference, monkeypatch
):
    """The first Ctrl-C at epoch 1's last step asks for a stop at the epoch end; the second lands just
    after that commit's last.pt rename. summary.json, last.pt and the CSVs must still agree, and the
    resume must reach the uninterrupted run's result with every train.csv row."""
    from experiments.train import trainer as trainer_module

    real_save = trainer_module.save_checkpoint

    def save_then_ctrl_c(state, path):
        real_save(state, path)
        if path.name == "last.pt" and state["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_ctrl_c)
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        launch.run_experiment(cfg, overrides, hooks=at_step(12, send(signal.SIGINT)))
    monkeypatch.undo()
    path = run_dir(cfg)
    last, summary = load(path / "last.pt"), read_json(path / "summary.json")
    assert (summary["status"], summary["steps"], summary["epochs_done"]) == ("interrupted", 12, 1)
    assert (last["step"], last["epoch"]) == (12, 1)
    assert pd.read_csv(path / "train.csv").step.tolist() == list(range(1, 13))
    assert pd.read_csv(path / "eval.csv").epoch.tolist() == [1]
    # (best.pt may lag behind last.pt here; the resume rebuilds it from last.pt's own weights)
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"
    assert_same_run(reference, path)


# ---------------------------------------------------------------------- 10. bad input: one sentence, nothing written


def refused(capsys, root, *extra) -> str:
    overrides = [f"runs_root={root}", "trainer.epochs=1", "trainer.progress=false", *extra]
    cfg = compose_config(overrides)
    code = run.execute(cfg, overrides)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not any(p.is_file() for p in Path(root).rglob("*")), "a refused command wrote files"
    return err


def test_a_task_that_does_not_fit_the_data_set_is_one_sentence(tmp_path, capsys):
    err = refused(capsys, tmp_path, "task=segmentation")
    assert "cannot be resolved at task.img_size (Interpolation key 'dataset.img_size' not found)" in err


def test_a_zero_eval_batch_size_names_its_own_key(tmp_path, capsys):
    assert "dataset.eval_batch_size=0 must be a whole number >= 1" in refused(
        capsys, tmp_path, "dataset.eval_batch_size=0"
    )
    assert "dataset.batch_size=-1 must be" in refused(capsys, tmp_path, "dataset.batch_size=-1")
    assert "dataset.num_workers=-2 must be a whole number >= 0" in refused(
        capsys, tmp_path, "dataset.num_workers=-2"
    )


def test_a_voc_root_without_annotations_is_refused_before_training(tmp_path, capsys):
    from data.fixtures import write_fixture

    voc = write_fixture("voc", tmp_path / "voc")
    for folder in voc.rglob("Annotations"):
        shutil.rmtree(folder)
    err = refused(
        capsys,
        tmp_path / "runs",
        "model=yolov7_tiny",
        f"dataset.root={voc}",
        "dataset.batch_size=4",
        "dataset.num_workers=0",
    )
    assert f"dataset voc at {voc}: reading evaluation sample 0 failed" in err and "make check-data" in err


@pytest.mark.parametrize(
    "override, words",
    [
        ("runs_root=", "runs_root='' is empty (an unset variable?)"),
        (
            "experiment_name=lr_${optimizer.lrr}",
            "cannot be resolved (Interpolation key 'optimizer.lrr' not found)",
        ),
    ],
)
def test_a_run_directory_that_cannot_be_named_is_one_sentence(override, words, capsys, tmp_path, monkeypatch):
    from experiments.runs.runs_root_check import RunsRootCheck

    monkeypatch.chdir(tmp_path)
    cfg = compose_config([override], hydra=True)
    with pytest.raises(SystemExit) as info:
        RunsRootCheck().on_run_start(cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no /default/... nor anything else made


@pytest.mark.slow
def test_run_py_reports_a_finished_run_whose_directory_cannot_take_hydras_log(tmp_path):
    """Through Hydra: a run directory where run.log cannot be created (as on a read-only runs root; here a
    folder squats its name, since root ignores permissions) still reports the finished run."""
    from tests.e2e.test_run_bad_input import cli

    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    assert launch.run_experiment(cfg, overrides)["status"] == "finished"
    (run_dir(cfg) / "run.log").mkdir()
    done = cli(*overrides)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"already finished: {run_dir(cfg)}" in done.stdout and "Traceback" not in done.stderr
