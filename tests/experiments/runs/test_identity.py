"""A run directory holds one configuration: a resume or a rerun whose identity (every setting that can change
the numbers, plus world size and device type) differs is refused with the differing keys, also when config.yaml
was deleted; keys that cannot change the numbers are really ignored."""

import pytest
import torch
from tests.helpers import compose_config
from omegaconf import OmegaConf

from experiments.runs import devices, launch
from experiments.train.collectives import DistInfo
from experiments.train.errors import UsageError
from experiments.runs.identity import IGNORED, identity_differences, run_identity
from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train.files import load_checkpoint, read_json, save_checkpoint, write_json
from experiments.train.trainer import Hooks

BASE = [
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.log_every=4",
    "dataset.test_size=1437",  # 360 training images: 12 steps per epoch
]


def make_cfg(root, *extra):
    overrides = [f"runs_root={root}", *BASE, *extra]
    return compose_config(overrides), overrides


def interrupted_run(root):
    """A run stopped after epoch 1 of 2 (last.pt at epoch 1, status interrupted)."""

    def stop(trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    cfg, overrides = make_cfg(root)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, overrides, hooks=Hooks(on_epoch_end=stop))
    path = run_dir(cfg)
    assert read_json(path / "summary.json")["status"] == "interrupted"
    return path


def ident(*extra, world_size=1, device="cpu"):
    return run_identity(compose_config(["runs_root=/r", *extra]), world_size, device)


def test_identity_is_the_whole_config_minus_the_documented_keys():
    base = ident()
    assert base["world_size"] == 1 and base["trainer.device"] == "cpu"
    assert {"seed", "optimizer.lr", "dataset.test_size", "trainer.grad_clip", "trainer.precision"} <= set(
        base
    )
    assert not any(key == name or key.startswith(name + ".") for key in base for name in IGNORED)
    # Keys that cannot change the numbers (IGNORED), and auto resolved to the device actually used:
    same = ident(
        "runs_root=/elsewhere",
        "trainer.progress=true",
        "trainer.log_every=7",
        "force=true",
        "debug=true",
        "dataset.root=/data",
        "dataset.download=true",
        "experiment_name=other",
        "trainer.device=cpu",
    )
    assert identity_differences(base, same) == []
    # Every other key counts, including ones the old IGNORED-free list missed:
    for override, line in [
        ("dataset.test_size=1000", "dataset.test_size: 360 -> 1000"),
        ("trainer.grad_clip=0.01", "trainer.grad_clip: None -> 0.01"),
        ("trainer.precision=bf16", "trainer.precision: 'fp32' -> 'bf16'"),
        ("dataset.num_workers=2", "dataset.num_workers: 0 -> 2"),
        ("dataset.eval_batch_size=100", "dataset.eval_batch_size: 360 -> 100"),
        ("trainer.eval_every=2", "trainer.eval_every: 1 -> 2"),
        ("model.dropout=0.3", "model.dropout: 0.1 -> 0.3"),
        ("optimizer.betas=[0.9,0.999]", "optimizer.betas: [0.9, 0.99] -> [0.9, 0.999]"),
    ]:
        assert identity_differences(base, ident(override)) == [line], override
    assert identity_differences(base, ident(world_size=2)) == ["world_size: 1 -> 2"]
    assert identity_differences(base, ident(device="cuda")) == ["trainer.device: 'cpu' -> 'cuda'"]


def test_identity_differences_edge_cases():
    # A key one side lacks counts as null; an unknown world size or device (an old run) is not compared.
    assert identity_differences({"a": 1}, {"a": 1, "b": None}) == []
    assert identity_differences({"a": 1}, {"a": 1, "b": 0}) == ["b: None -> 0"]
    assert identity_differences({"a": 1}, {"a": 1, "world_size": 2, "trainer.device": "cuda"}) == []
    assert identity_differences({"a": True}, {"a": 1}) == ["a: True -> 1"]


def test_a_changed_setting_is_refused_on_resume_and_on_a_finished_run(tmp_path, monkeypatch):
    path = interrupted_run(tmp_path)
    before = {name: (path / name).read_bytes() for name in ("last.pt", "config.yaml", "train.csv")}
    for override, line in [
        ("dataset.test_size=1000", r"dataset\.test_size: 1437 -> 1000"),
        ("trainer.grad_clip=0.01", r"trainer\.grad_clip: None -> 0\.01"),
        ("trainer.precision=bf16", r"trainer\.precision: 'fp32' -> 'bf16'"),
    ]:
        cfg, overrides = make_cfg(tmp_path, override)
        with pytest.raises(
            UsageError, match=rf"holds a run made with a different config \({line}\).*force=true"
        ):
            run_experiment(cfg, overrides)
    # A single-process run resumed under torchrun (2 processes) continues with other batches: refused.
    monkeypatch.setattr(
        devices, "setup", lambda *args: DistInfo(world_size=2, device=torch.device("cpu"))
    )
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(UsageError, match=r"\(world_size: 1 -> 2\)"):
        run_experiment(cfg, overrides)
    monkeypatch.undo()
    assert {name: (path / name).read_bytes() for name in before} == before  # nothing touched

    # Keys that cannot change the numbers do not stop the resume.
    cfg, overrides = make_cfg(tmp_path, "trainer.log_every=5", "trainer.device=cpu", "dataset.root=/nowhere")
    summary = run_experiment(cfg, overrides)
    assert summary["status"] == "finished" and summary["steps"] == 24 and not summary.get("skipped")
    assert load_checkpoint(path / "last.pt")["identity"]["dataset.test_size"] == 1437

    cfg, overrides = make_cfg(tmp_path, "dataset.test_size=1000")
    with pytest.raises(
        UsageError, match=r"holds a finished run made with .*dataset\.test_size: 1437 -> 1000"
    ):
        run_experiment(cfg, overrides)
    cfg, overrides = make_cfg(tmp_path)
    assert run_experiment(cfg, overrides)["skipped"]
    cfg, overrides = make_cfg(tmp_path, "dataset.test_size=1000", "force=true")
    forced = run_experiment(cfg, overrides)
    assert forced["status"] == "finished" and not forced.get("skipped") and forced["steps_per_epoch"] == 25


def test_last_pt_keeps_the_identity_when_config_yaml_is_deleted(tmp_path):
    path = interrupted_run(tmp_path)
    (path / "config.yaml").unlink()
    cfg, overrides = make_cfg(tmp_path, "optimizer.lr=0.005")
    with pytest.raises(UsageError, match=r"optimizer\.lr: 0\.001 -> 0\.005"):
        run_experiment(cfg, overrides)
    # A hand-edited config.yaml that disagrees with last.pt is not trusted either.
    edited = compose_config([f"runs_root={tmp_path}", *BASE, "optimizer.lr=0.005"])
    (path / "config.yaml").write_text(OmegaConf.to_yaml(edited))
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(
        UsageError, match=r"config\.yaml disagrees with last\.pt \(optimizer\.lr: 0\.001 -> 0\.005\)"
    ):
        run_experiment(cfg, overrides)
    (path / "config.yaml").unlink()
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert (path / "config.yaml").is_file()


def test_an_old_checkpoint_without_identity_falls_back_to_config_yaml(tmp_path):
    path = interrupted_run(tmp_path)
    state = load_checkpoint(path / "last.pt")
    del state["identity"]
    save_checkpoint(state, path / "last.pt")
    cfg, overrides = make_cfg(tmp_path, "trainer.grad_clip=0.5")
    with pytest.raises(UsageError, match=r"trainer\.grad_clip: None -> 0\.5"):
        run_experiment(cfg, overrides)
    config = (path / "config.yaml").read_text()
    (path / "config.yaml").unlink()  # nothing left that says which config made it
    cfg, overrides = make_cfg(tmp_path)
    with pytest.raises(UsageError, match=r"neither config\.yaml nor an identity in last\.pt.*force=true"):
        run_experiment(cfg, overrides)
    (path / "config.yaml").write_text(config)
    assert run_experiment(cfg, overrides)["status"] == "finished"


def test_the_precheck_skips_a_finished_run_without_building_anything(tmp_path, monkeypatch):
    cfg, overrides = make_cfg(tmp_path, "trainer.epochs=1")
    run_experiment(cfg, overrides)

    def no_build(*args, **kwargs):
        raise AssertionError("a finished run was built again")

    monkeypatch.setattr(launch, "build_trainer", no_build)
    assert run_experiment(cfg, overrides)["skipped"]


def test_versions_are_not_compared_but_a_resume_under_another_torch_is_announced(tmp_path, capsys):
    path = interrupted_run(tmp_path)
    summary = read_json(path / "summary.json")
    summary["versions"]["torch"] = "1.0.0"
    write_json(summary, path / "summary.json")
    cfg, overrides = make_cfg(tmp_path)
    assert run_experiment(cfg, overrides)["status"] == "finished"
    assert f"started with torch 1.0.0; resuming it with torch {torch.__version__}" in capsys.readouterr().out
