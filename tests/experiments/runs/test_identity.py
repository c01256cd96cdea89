"""A run directory holds one configuration: a resume or a rerun whose identity (every setting that can change
the numbers, plus world size and device type) differs is refused with the differing keys, also when config.yaml
was deleted; keys that cannot change the numbers are really ignored."""

import functools

import pytest
import torch
from omegaconf import OmegaConf

from experiments.runs import devices, launch
from experiments.runs.identity import IGNORED, identity_differences, run_identity
from experiments.runs.launch import run_experiment
from experiments.runs.rundir import run_dir
from experiments.train.collectives import DistInfo
from experiments.train.errors import UsageError
from experiments.train.files import load_checkpoint, read_json, save_checkpoint, write_json
from experiments.train.trainer import Hooks
from tests.helpers import compose_config

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


@pytest.mark.slow
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
    monkeypatch.setattr(devices, "setup", lambda *args: DistInfo(world_size=2, device=torch.device("cpu")))
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


# ---------------------------------------------------------------------- every key: counts, or a stated reason

# Every key any config group can set (composed one option at a time), decided one by one. A key here must
# change the identity, so a resume or rerun with another value is refused. A key added to the configs
# fails test_every_config_key_is_decided until it is listed here or in identity.IGNORED with its reason.
COUNTED = """
probes.reset_v_at
dataset.augment dataset.batch_size dataset.device_resident dataset.drop_last dataset.eval_batch_size dataset.flip
dataset.img_size dataset.keep_difficult dataset.name dataset.num_workers dataset.scale dataset.test_size
dataset.val_size model.base model.dropout model.hidden model.name model.width optimizer.betas
optimizer.decoupled_weight_decay optimizer.eps optimizer.foreach optimizer.fused
optimizer.hessian_update_interval optimizer.lr optimizer.momentum optimizer.name optimizer.rho
optimizer.weight_decay schedule.min_lr schedule.name schedule.t1 schedule.t1_fraction seed target.metric
target.value task.assigner task.coco_metrics task.conf_thres task.dice_weight task.ignore_index task.img_size
task.iou_thres task.label_smoothing task.max_det task.multi_label task.name trainer.channels_last
trainer.compile trainer.deterministic trainer.device trainer.epochs trainer.eval_every trainer.grad_clip
trainer.precision trainer.sync_bn trainer.tf32
""".split()
# identity.IGNORED's keys, each with how this module checks that it cannot change the numbers:
# "run": test_the_ignored_trainer_and_loader_keys_leave_the_numbers_alone trains with it changed;
# "path": it only names the run directory (test_identity_is_the_whole_config_minus_the_documented_keys);
# "data": the files behind it are identified by data.* (tests/e2e/test_fault_campaign.py, item 4);
# "merged": test_per_optimizer_counts_through_the_keys_it_merges; "policy": what to do with the directory.
IGNORED_HOW = {
    "trainer.progress": "run",
    "trainer.log_every": "run",
    "trainer.checkpoint_every_min": "run",
    "trainer.tensorboard": "run",
    "trainer.jobs_per_gpu": "run",
    "trainer.dist_timeout_min": "policy",
    "trainer.optim_stats_every": "run",
    "trainer.optim_stats_eps": "run",
    "trainer.full_loss_steps": "run",
    "trainer.full_loss_at_eval": "run",
    "dataset.pin_memory": "run",
    "dataset.download": "data",
    "dataset.root": "data",
    "runs_root": "path",
    "experiment_name": "path",
    "force": "policy",
    "debug": "policy",
    "per_optimizer": "merged",
    "hydra": "policy",
}


@functools.cache
def _all_configs() -> tuple:
    """The default config and one per option of each group (those that resolve on their own: a task
    option alone may need its data set's keys; the model options carry their task and data set)."""
    import pathlib

    from hydra import compose, initialize_config_dir
    from omegaconf.errors import OmegaConfBaseException

    from tests.helpers import CONFIGS

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):  # once: composing is cheap
        choices = [["runs_root=/r"]] + [
            ["runs_root=/r", f"{group}={option.stem}"]
            for group in ("dataset", "model", "optimizer", "task", "schedule", "experiment")
            for option in sorted(pathlib.Path(CONFIGS, group).glob("*.yaml"))
        ]
        configs = [(c[-1].split("=")[0], c[-1], compose("config", overrides=c)) for c in choices]
    out = []
    for group, option, cfg in configs:
        try:
            OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException:
            assert group == "task", f"{option} does not resolve"
            continue
        out.append(cfg)
    return tuple(out)


def _flat(cfg) -> dict:
    from experiments.runs.identity import _flatten

    return _flatten(OmegaConf.to_container(cfg, resolve=True))


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 0.5  # None


@pytest.mark.slow
def test_every_config_key_is_decided():
    from experiments.runs.identity import _ignored

    assert set(IGNORED) == set(IGNORED_HOW), "identity.IGNORED changed: state how the new entry is checked"
    assert all(isinstance(why, str) and len(why) > 10 for why in IGNORED.values())
    seen = set()
    for cfg in _all_configs():
        seen |= set(_flat(cfg))
    undecided = sorted(key for key in seen if not _ignored(key) and key not in COUNTED)
    assert undecided == [], f"keys neither counted nor ignored with a reason: {undecided}"
    assert not [key for key in COUNTED if _ignored(key)], "a counted key is on the ignored list"
    assert set(COUNTED) <= seen | {"trainer.tf32"}


@pytest.mark.heavy
def test_every_counted_key_changes_the_identity_and_a_resume_is_refused(tmp_path):
    """Table-driven over every counted key of every composed config: another value is named in the
    identity's differences, and a run directory holding the old identity refuses the new one."""
    checked = set()
    for cfg in _all_configs():
        container = OmegaConf.to_container(cfg, resolve=True)
        flat = _flat(cfg)
        base = run_identity(container, 1, "cpu")
        for key in COUNTED:
            if key not in flat or key in checked or key == "trainer.device":
                continue
            checked.add(key)
            changed = OmegaConf.create(container)
            new = _other(flat[key])
            OmegaConf.update(changed, key, new, force_add=True)
            diff = identity_differences(base, run_identity(changed, 1, "cpu"))
            assert diff == [f"{key}: {flat[key]!r} -> {new!r}"], key
            path = tmp_path / key
            path.mkdir()
            save_checkpoint({"identity": base, "step": 0, "epoch": 0}, path / "last.pt")
            with pytest.raises(UsageError, match=rf"made with a different config \({key}: "):
                launch.check_run_dir(path, run_identity(changed, 1, "cpu"))
    assert checked == set(COUNTED) - {"trainer.device"}
    # trainer.device counts as the device type actually used (auto resolved):
    assert identity_differences(ident(device="cpu"), ident(device="cuda")) == [
        "trainer.device: 'cpu' -> 'cuda'"
    ]


def test_per_optimizer_counts_through_the_keys_it_merges():
    from experiments.runs.build import apply_per_optimizer

    plain = compose_config(["runs_root=/r"])
    tuned = apply_per_optimizer(compose_config(["runs_root=/r", "+per_optimizer.adamx.optimizer.lr=0.5"]))
    assert identity_differences(run_identity(plain, 1, "cpu"), run_identity(tuned, 1, "cpu")) == [
        f"optimizer.lr: {plain.optimizer.lr!r} -> 0.5"
    ]


@pytest.mark.heavy
def test_the_ignored_trainer_and_loader_keys_leave_the_numbers_alone(tmp_path):
    """Each "run" key of IGNORED_HOW changed at once: the same losses, evaluations and weights."""
    base_cfg, base_overrides = make_cfg(tmp_path / "a", "trainer.epochs=1")
    changed = [
        "trainer.progress=true",
        "trainer.log_every=5",
        "trainer.checkpoint_every_min=1e-9",  # a mid-epoch last.pt after every step
        "trainer.jobs_per_gpu=3",
        "trainer.optim_stats_every=2",
        "trainer.optim_stats_eps=0.5",
        "trainer.full_loss_steps=[3,7]",
        "trainer.full_loss_at_eval=true",
        "++dataset.pin_memory=false",
    ]
    try:
        import tensorboard  # noqa: F401

        changed.append("trainer.tensorboard=true")
    except ImportError:
        pass
    assert {o.split("=")[0].lstrip("+") for o in changed} <= {
        k for k, how in IGNORED_HOW.items() if how == "run"
    }
    other_cfg, other_overrides = make_cfg(tmp_path / "b", "trainer.epochs=1", *changed)
    run_experiment(base_cfg, base_overrides)
    run_experiment(other_cfg, other_overrides)
    import pandas as pd

    a, b = run_dir(base_cfg), run_dir(other_cfg)
    for log in ("train.csv", "eval.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(a / log).drop(columns="time"),
            pd.read_csv(b / log).drop(columns="time"),
            check_exact=True,
        )
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        (["optimizer=adamx"], "fused"),  # the configs' default, optimizer.fused=auto, on a CPU
        (["optimizer=adamx", "optimizer.fused=false"], "single"),  # torch's choice on a CPU
        (["optimizer=adamx", "optimizer.fused=false", "optimizer.foreach=true"], "foreach"),
        (["optimizer=lion"], "single"),  # no fused key in its config: torch's default path (foreach on CUDA)
    ],
)
def test_summary_records_the_optimizer_path_that_ran(tmp_path, extra, path):
    """optimizer.fused=auto is resolved per device; summary.json says what ran."""
    cfg, overrides = make_cfg(tmp_path, *extra, "trainer.epochs=1", "dataset.test_size=1400")
    assert run_experiment(cfg, overrides)["optimizer_path"] == path
