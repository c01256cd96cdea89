"""Every bad input gets one sentence naming the key or file and exit code 2, with no traceback and nothing
written; genuine bugs still raise (traceback, exit 1) and mark a run that was training as failed."""

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import run
from experiments.runs.rundir import run_dir
from experiments.train.files import read_json
from experiments.train.trainer import Hooks
from tests.helpers import ROOT, compose_config, harness_env, run_py

BASE = ["trainer.epochs=2", "trainer.progress=false", "dataset.test_size=1437"]


def make_cfg(root, *extra):
    overrides = [f"runs_root={root}", *BASE, *extra]
    return compose_config(overrides), overrides


def refused(capsys, root, *extra, base=BASE) -> str:
    """Run ``extra`` through run.execute; assert exit 2 and one line on stderr; return that line."""
    overrides = [f"runs_root={root}", *base, *extra]
    cfg = compose_config(overrides)
    code = run.execute(cfg, overrides)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(tmp_path, capsys):
    assert "trainer.device=cuda" in refused(capsys, tmp_path, "trainer.device=cuda")
    assert files_under(tmp_path) == []


def test_settings_of_the_wrong_type_or_name(tmp_path, capsys):
    assert "trainer.epochs='abc' is not of type int" in refused(capsys, tmp_path, "trainer.epochs=abc")
    assert "trainer.grad_clip='x' is not of type float or null" in refused(
        capsys, tmp_path, "trainer.grad_clip=x"
    )
    assert "Unknown key trainer.epoch (did you mean trainer.epochs?)" in refused(
        capsys, tmp_path, "+trainer.epoch=3"
    )
    assert "seed='abc' is not an integer" in refused(capsys, tmp_path, "seed=abc")
    assert "trainer.precision='fp8'" in refused(capsys, tmp_path, "trainer.precision=fp8")
    assert "optimizer.hessian_update_interval=5" in refused(
        capsys, tmp_path, "+optimizer.hessian_update_interval=5"
    )
    assert "model settings: " in refused(capsys, tmp_path, "+model.depth=3")
    assert files_under(tmp_path) == []


def test_download_that_cannot_reach_its_server(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "c"
    err = refused(
        capsys, tmp_path, "model=swinv2_s", "dataset.download=true", f"dataset.root={root}", base=[]
    )
    assert "dataset.download=true could not fetch cifar100" in err and str(root) in err
    assert "Connection refused" in err and "dataset.download=false" in err


@pytest.mark.heavy
def test_unreadable_run_directory_files(tmp_path, capsys):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    assert run.execute(cfg, overrides) == 0
    path = run_dir(cfg)
    good = (path / "last.pt").read_bytes()
    (path / "last.pt").write_bytes(good[: len(good) // 2])
    assert "last.pt cannot be read, it is truncated or corrupt" in refused(
        capsys, tmp_path, "trainer.epochs=1"
    )
    (path / "last.pt").write_bytes(b"")
    assert "last.pt cannot be read, it is truncated or corrupt (it is empty)" in refused(
        capsys, tmp_path, "trainer.epochs=1"
    )
    (path / "last.pt").write_bytes(good)
    config = (path / "config.yaml").read_text()
    (path / "config.yaml").write_text("seed: [0\noptimizer: {")
    assert "config.yaml is not a readable config" in refused(capsys, tmp_path, "trainer.epochs=1")
    (path / "config.yaml").write_text("- a list\n")
    assert "config.yaml is not a readable config (it holds a list)" in refused(
        capsys, tmp_path, "trainer.epochs=1"
    )
    (path / "config.yaml").write_text(config)
    assert run.execute(cfg, overrides) == 0 and "already finished" in capsys.readouterr().out


def test_a_run_directory_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "Cannot create the run directory" in refused(capsys, blocker / "runs")


def test_debug_true_shows_the_traceback(tmp_path):
    cfg, overrides = make_cfg(tmp_path, "seed=abc", "debug=true")
    with pytest.raises(ValueError, match="seed='abc'"):
        run.execute(cfg, overrides)


def test_a_bug_during_training_raises_and_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    from experiments.runs import launch

    def crash(trainer, epoch):
        raise ZeroDivisionError("a bug in a hook")

    real = launch.run_experiment
    monkeypatch.setattr(
        launch, "run_experiment", lambda c, o, hooks=None: real(c, o, hooks=Hooks(on_epoch_end=crash))
    )
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(ZeroDivisionError):  # not turned into exit 2: Hydra prints its traceback, exit 1
        run.execute(cfg, overrides)
    summary = read_json(run_dir(cfg) / "summary.json")
    assert summary["status"] == "failed" and summary["reason"] == "ZeroDivisionError: a bug in a hook"
    assert not (run_dir(cfg) / ".run.lock").exists()


def test_out_of_memory_fails_the_run_in_one_sentence(tmp_path, monkeypatch, capsys):
    from experiments.runs import launch

    def oom(trainer, epoch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    real = launch.run_experiment
    monkeypatch.setattr(
        launch, "run_experiment", lambda c, o, hooks=None: real(c, o, hooks=Hooks(on_epoch_end=oom))
    )
    cfg, overrides = make_cfg(tmp_path)
    assert run.execute(cfg, overrides) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("failed: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)")
        and "\n" not in err
    )
    assert read_json(run_dir(cfg) / "summary.json")["status"] == "failed"


def cli(*args, timeout=600):
    return run_py(*args, timeout=timeout)


@pytest.mark.slow
def test_command_line_refusals_leave_nothing_behind_and_the_corrected_command_runs(tmp_path):
    runs = tmp_path / "runs"
    bad = cli(f"runs_root={runs}", *BASE, "+optimizer.hessian_update_interval=5")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: optimizer.hessian_update_interval=5 is set but AdamX has no update_hessian(); remove the key "
        "or use optimizer=sophiag."
    ]
    assert files_under(runs) == [] and not (runs / "default").exists()  # not even Hydra's run.log
    good = cli(f"runs_root={runs}", *BASE)
    assert good.returncode == 0 and "status: finished" in good.stdout, good.stderr[-2000:]

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unwritable = cli(f"runs_root={blocker / 'runs'}", *BASE)
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
    assert unwritable.stderr.startswith(f"error: runs_root={blocker / 'runs'}: cannot create ")
    assert unwritable.stderr.count("\n") == 1


@pytest.mark.slow
def test_under_torchrun_a_refusal_on_rank_0_reaches_every_rank(tmp_path):
    """Only rank 0 reads the run directory; the other rank must raise the same sentence, not wait in a
    collective until the process group times out."""
    path = run_dir(make_cfg(tmp_path)[0])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: [0\n")
    env = harness_env()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "run.py"),
            f"runs_root={tmp_path}",
            *BASE,
            "trainer.device=cpu",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    # Both ranks write to one inherited stderr, so one sentence may start mid-line after the other
    # process's output: count the sentences, not the lines that start with them.
    errors = re.findall(r"error: (\S+ is not a readable config \()", proc.stdout + proc.stderr)
    assert len(errors) == 2 and errors[0] == errors[1] and "config.yaml" in errors[0], proc.stderr[-3000:]
    # (torchrun then reports the failed workers with its own traceback)


def test_new_settings_are_validated_before_anything_is_written(tmp_path, capsys):
    """The sweep settings (jobs_per_gpu, cuda:<k>) and SophiaG on a task without a sampled loss."""
    assert "trainer.jobs_per_gpu must be >= 1" in refused(capsys, tmp_path, "trainer.jobs_per_gpu=0")
    if not torch.cuda.is_available():
        assert "trainer.device=cuda:3" in refused(capsys, tmp_path, "trainer.device=cuda:3")
    from data.fixtures import write_fixture

    voc = write_fixture("voc", tmp_path / "voc")
    line = refused(
        capsys,
        tmp_path / "runs",
        "model=yolov7_tiny",
        "optimizer=sophiag",
        f"dataset.root={voc}",
        base=["trainer.epochs=1", "trainer.progress=false", "dataset.batch_size=4", "dataset.num_workers=0"],
    )
    assert "defines no sampled_loss" in line and "'detection'" in line
    assert files_under(tmp_path / "runs") == []
