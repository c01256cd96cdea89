"""The core that `make mutants` mutates, and the tests each part is scored against.

A group is a set of source files, the test files that exercise them in-process ("tests": run under
coverage, and each mutant then runs those that execute its statement, `-m "not slow"`), and, optionally,
the end-to-end tests that reach code only other processes run ("subprocess": run.py, torchrun's ranks,
real signals; slow ones included) for the mutants no in-process test executes, and ("always") fast files
of value checks that read defaults without executing the file's lines, run after the covering tests.
"""

from __future__ import annotations

GROUPS: dict[str, dict[str, list[str]]] = {
    "adamx": {
        "sources": [
            "adamx/_base.py",
            "adamx/_adaptive.py",
            "adamx/adamx.py",
            "adamx/adax.py",
            "adamx/lion.py",
            "adamx/sophia.py",
            "adamx/schedules.py",
            "adamx/registry.py",
            "adamx/param_groups.py",
        ],
        "tests": [
            "tests/adamx/test_contract.py",
            "tests/adamx/test_one_step.py",
            "tests/adamx/test_params_grid.py",
            "tests/adamx/test_reference.py",
            "tests/adamx/test_schedules.py",
            "tests/scripts/test_mc_eq10.py",
            "tests/adamx/test_validation.py",
            "tests/adamx/test_state.py",
            "tests/adamx/test_convert.py",
            "tests/adamx/test_param_groups.py",
            "tests/adamx/test_compile_matrix.py",
            "tests/adamx/test_edges.py",
            "tests/adamx/test_fused_auto.py",
            "tests/adamx/test_fused_horizon.py",
            "tests/experiments/train/test_registered_schedule.py",
        ],
    },
    "experiments.train.schedule": {
        "sources": ["experiments/train/schedule.py"],
        "tests": ["tests/experiments/train/test_schedule.py", "tests/experiments/train/test_trainer.py"],
    },
    "experiments.rundir": {
        "sources": [
            "experiments/runs/rundir.py",
            "experiments/train/files.py",
            "experiments/train/provenance.py",
        ],
        "subprocess": ["tests/e2e/test_run_bad_input.py", "tests/e2e/test_harness_run.py"],
        "tests": [
            "tests/experiments/runs/test_rundir.py",
            "tests/experiments/runs/test_launch.py",
            "tests/experiments/train/test_checkpoint.py",
            "tests/experiments/runs/test_identity.py",
            "tests/e2e/test_fault_injection.py",
            "tests/experiments/train/test_commit_pins.py",
            "tests/e2e/test_fault_campaign.py",
            "tests/experiments/train/test_signals.py",
        ],
    },
    "experiments.runs.launch": {
        "sources": ["experiments/runs/launch.py"],
        "subprocess": [
            "tests/e2e/test_run_bad_input.py",
            "tests/experiments/runs/test_runlock.py",
            "tests/e2e/test_harness_run.py",
        ],
        "tests": [
            "tests/experiments/runs/test_launch.py",
            "tests/experiments/runs/test_identity.py",
            "tests/experiments/train/test_checkpoint.py",
            "tests/experiments/train/test_trainer.py",
            "tests/e2e/test_run_bad_input.py",
            "tests/e2e/test_fault_campaign.py",
            "tests/experiments/runs/test_devices.py",
            "tests/experiments/train/test_probes.py",
        ],
    },
    "experiments.train.trainer": {
        "sources": [
            "experiments/train/trainer.py",
            "experiments/train/checkpoint.py",
            "experiments/train/records.py",
            "experiments/train/config.py",
            "experiments/train/hessian.py",
            "experiments/train/placement.py",
        ],
        "always": ["tests/experiments/train/test_trainer.py"],
        "subprocess": ["tests/e2e/test_ddp.py", "tests/e2e/test_fault_injection.py"],
        "tests": [
            "tests/experiments/train/test_trainer.py",
            "tests/experiments/train/test_records.py",
            "tests/experiments/train/test_tensorboard_log.py",
            "tests/experiments/train/test_checkpoint.py",
            "tests/e2e/test_fault_injection.py",
            "tests/experiments/train/test_commit_pins.py",
            "tests/experiments/train/test_probes.py",
            "tests/e2e/test_fault_campaign.py",
            "tests/experiments/runs/test_rundir.py",
        ],
    },
    "experiments.train.loaders": {
        "sources": ["experiments/train/loaders.py"],
        "subprocess": ["tests/e2e/test_ddp.py"],
        "tests": [
            "tests/experiments/train/test_loaders.py",
            "tests/experiments/train/test_trainer.py",
            "tests/experiments/train/test_checkpoint.py",
            "tests/experiments/train/test_commit_pins.py",
        ],
    },
    "experiments.tasks": {
        "sources": [
            "experiments/train/task.py",
            "experiments/tasks/classification.py",
            "experiments/tasks/detection/task.py",
            "experiments/tasks/segmentation/task.py",
        ],
        "tests": [
            "tests/experiments/train/test_loaders.py",
            "tests/experiments/tasks/test_classification.py",
            "tests/experiments/tasks/detection/test_task.py",
            "tests/experiments/tasks/segmentation/test_task.py",
            "tests/experiments/tasks/segmentation/test_loss.py",
            "tests/experiments/train/test_trainer.py",
            "tests/experiments/tasks/detection/test_ddp_safety.py",
            "tests/experiments/tasks/segmentation/test_no_scipy.py",
        ],
    },
    "experiments.tasks.detection": {
        "sources": [
            "experiments/tasks/detection/boxes.py",
            "experiments/tasks/detection/assign.py",
            "experiments/tasks/detection/loss.py",
            "experiments/tasks/detection/postprocess.py",
            "experiments/tasks/detection/voc_map.py",
        ],
        "tests": [
            "tests/experiments/tasks/detection/test_boundaries.py",
            "tests/experiments/tasks/detection/test_voc_map.py",
            "tests/experiments/tasks/detection/test_postprocess.py",
            "tests/experiments/tasks/detection/test_loss.py",
            "tests/experiments/tasks/detection/test_task.py",
            "tests/experiments/tasks/detection/test_assign_rectangular.py",
            "tests/experiments/tasks/detection/test_nms_one_call.py",
            "tests/experiments/tasks/detection/test_ddp_safety.py",
        ],
    },
    "experiments.tasks.segmentation": {
        "sources": ["experiments/tasks/segmentation/loss.py", "experiments/tasks/segmentation/miou.py"],
        "tests": [
            "tests/experiments/tasks/segmentation/test_task.py",
            "tests/experiments/train/test_loaders.py",
            "tests/experiments/tasks/segmentation/test_loss.py",
        ],
    },
    "data": {
        "always": ["tests/data/test_builders.py"],
        "sources": [
            "data/files.py",
            "data/cifar/reader.py",
            "data/cifar/dataset.py",
            "data/cifar/augment.py",
            "data/cifar/device.py",
            "data/voc/reader.py",
            "data/voc/dataset.py",
            "data/voc/augment.py",
            "data/sbd/reader.py",
            "data/sbd/dataset.py",
            "data/sbd/augment.py",
            "data/digits/dataset.py",
        ],
        "tests": [
            "tests/data/test_builders.py",
            "tests/data/test_augment.py",
            "tests/data/test_readers.py",
            "tests/data/test_cifar.py",
            "tests/data/test_voc.py",
            "tests/data/test_sbd.py",
            "tests/scripts/test_check_data.py",
            "tests/data/test_digits.py",
        ],
    },
    "scripts.tables": {
        "sources": ["scripts/make_tables.py", "scripts/results_io.py"],
        "always": ["tests/data/test_builders.py"],
        "tests": [
            "tests/data/test_builders.py",
            "tests/scripts/test_make_tables.py",
            "tests/scripts/test_make_figures.py",
            "tests/scripts/test_stats.py",
        ],
    },
    "adamx.state": {
        "sources": ["adamx/state.py"],
        "tests": [
            "tests/adamx/test_state.py",
            "tests/adamx/test_validation.py",
            "tests/adamx/test_convert.py",
            "tests/adamx/test_edges.py",
            "tests/adamx/test_fused_horizon.py",
        ],
    },
    "adamx.convert": {
        "sources": ["adamx/convert.py"],
        "tests": ["tests/adamx/test_convert.py", "tests/adamx/test_state.py"],
    },
    "experiments.runs.identity": {
        "sources": ["experiments/runs/identity.py"],
        "subprocess": ["tests/e2e/test_run_bad_input.py"],
        "tests": [
            "tests/experiments/runs/test_identity.py",
            "tests/experiments/runs/test_launch.py",
            "tests/e2e/test_fault_campaign.py",
            "tests/experiments/runs/test_data_fingerprint.py",
        ],
    },
    "experiments.runs.runlock": {
        "sources": ["experiments/runs/runlock.py"],
        "subprocess": ["tests/experiments/runs/test_runlock.py", "tests/e2e/test_run_bad_input.py"],
        "tests": [
            "tests/experiments/runs/test_runlock.py",
            "tests/experiments/runs/test_launch.py",
            "tests/e2e/test_fault_campaign.py",
            "tests/experiments/runs/test_runlock_details.py",
            "tests/scripts/test_sweep_status.py",
        ],
    },
    "experiments.train.signals": {
        "sources": ["experiments/train/signals.py"],
        "subprocess": ["tests/e2e/test_fault_injection.py", "tests/e2e/test_sweep_launchers.py"],
        "tests": [
            "tests/e2e/test_fault_injection.py",
            "tests/e2e/test_sweep_launchers.py",
            "tests/experiments/train/test_commit_pins.py",
            "tests/experiments/train/test_signals.py",
        ],
    },
    "experiments.runs.requeue": {
        "sources": ["experiments/runs/requeue.py"],
        "subprocess": ["tests/e2e/test_sweep_launchers.py"],
        "tests": ["tests/e2e/test_sweep_launchers.py"],
    },
    "experiments.runs.gpu_slots": {
        "sources": ["experiments/runs/gpu_slots.py"],
        "tests": ["tests/experiments/runs/test_gpu_slots.py"],
    },
    "scripts.tune_lr": {
        "sources": ["scripts/tune_lr.py"],
        "tests": ["tests/scripts/test_tune_lr.py"],
    },
    "scripts.sweep_status": {
        "sources": ["scripts/sweep_status.py"],
        "subprocess": ["tests/e2e/test_sweep_launchers.py"],
        "tests": ["tests/scripts/test_sweep_status.py"],
    },
}


def group_of(source: str) -> str:
    """The group a source file belongs to."""
    for name, group in GROUPS.items():
        if source in group["sources"]:
            return name
    raise KeyError(f"{source} is not in the mutated core (tools/mutants/targets.py)")
