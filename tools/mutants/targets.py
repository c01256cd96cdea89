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
            "adamx/state.py",
            "adamx/convert.py",
            "adamx/registry.py",
            "adamx/param_groups.py",
        ],
        "tests": [
            "tests/test_optim_contract_exact.py",
            "tests/test_optim_edges_exact.py",
            "tests/test_optim_one_step.py",
            "tests/test_optim_params_grid.py",
            "tests/test_optim_reference.py",
            "tests/test_schedules.py",
            "tests/test_mc_eq10.py",
            "tests/test_optim_validation.py",
            "tests/test_optim_contract.py",
            "tests/test_optim_state.py",
            "tests/test_optim_state_exact.py",
            "tests/test_optim_convert.py",
            "tests/test_param_groups.py",
        ],
    },
    "experiments.train.schedule": {
        "sources": ["experiments/train/schedule.py"],
        "tests": ["tests/test_schedule_exact.py", "tests/test_schedule.py", "tests/test_trainer_features.py"],
    },
    "experiments.rundir": {
        "sources": ["experiments/rundir.py"],
        "subprocess": ["tests/test_run_bad_input.py", "tests/test_harness_run.py"],
        "tests": [
            "tests/test_rundir_exact.py",
            "tests/test_launch_exact.py",
            "tests/test_run_dir_records.py",
            "tests/test_trainer_integrity.py",
            "tests/test_run_identity.py",
            "tests/test_trainer_resume.py",
            "tests/test_fault_injection.py",
        ],
    },
    "experiments.runs.launch": {
        "sources": ["experiments/runs/launch.py"],
        "subprocess": ["tests/test_run_bad_input.py", "tests/test_run_lock.py", "tests/test_harness_run.py"],
        "tests": [
            "tests/test_launch_exact.py",
            "tests/test_run_dir_records.py",
            "tests/test_run_identity.py",
            "tests/test_trainer_integrity.py",
            "tests/test_trainer_failures.py",
            "tests/test_trainer_features.py",
            "tests/test_run_bad_input.py",
            "tests/test_trainer_resume.py",
        ],
    },
    "experiments.train.trainer": {
        "sources": ["experiments/train/trainer.py"],
        "always": ["tests/test_trainer_defaults.py"],
        "subprocess": ["tests/test_ddp.py", "tests/test_fault_injection.py"],
        "tests": [
            "tests/test_trainer_defaults.py",
            "tests/test_trainer_records.py",
            "tests/test_tensorboard_log.py",
            "tests/test_trainer_features.py",
            "tests/test_trainer_integrity.py",
            "tests/test_trainer_resume.py",
            "tests/test_trainer_failures.py",
            "tests/test_fault_injection.py",
        ],
    },
    "experiments.train.loaders": {
        "sources": ["experiments/train/loaders.py"],
        "subprocess": ["tests/test_ddp.py"],
        "tests": [
            "tests/test_loader_epochs.py",
            "tests/test_tasks_loaders_exact.py",
            "tests/test_trainer_features.py",
            "tests/test_trainer_integrity.py",
            "tests/test_trainer_resume.py",
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
            "tests/test_tasks_loaders_exact.py",
            "tests/test_classification_task.py",
            "tests/test_detection_task.py",
            "tests/test_detection_multilabel.py",
            "tests/test_segmentation_metrics.py",
            "tests/test_segmentation_loss_deterministic.py",
            "tests/test_trainer_features.py",
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
            "tests/test_detection_boundaries.py",
            "tests/test_voc_map.py",
            "tests/test_detection_postprocess.py",
            "tests/test_detection_loss.py",
            "tests/test_detection_multilabel.py",
            "tests/test_detection_sync_free.py",
            "tests/test_detection_task.py",
        ],
    },
    "experiments.tasks.segmentation": {
        "sources": ["experiments/tasks/segmentation/loss.py", "experiments/tasks/segmentation/miou.py"],
        "tests": [
            "tests/test_segmentation_exact.py",
            "tests/test_tasks_loaders_exact.py",
            "tests/test_segmentation_metrics.py",
            "tests/test_segmentation_loss_deterministic.py",
        ],
    },
    "data": {
        "always": ["tests/test_data_tables_defaults.py"],
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
            "tests/test_data_tables_defaults.py",
            "tests/test_augment_exact.py",
            "tests/test_readers_exact.py",
            "tests/test_cifar_augment.py",
            "tests/test_cifar_data.py",
            "tests/test_voc_data.py",
            "tests/test_sbd_data.py",
            "tests/test_check_data.py",
            "tests/test_claims_digits_val.py",
        ],
    },
    "scripts.tables": {
        "sources": ["scripts/make_tables.py", "scripts/results_io.py"],
        "always": ["tests/test_data_tables_defaults.py"],
        "tests": [
            "tests/test_data_tables_defaults.py",
            "tests/test_tables_exact.py",
            "tests/test_make_tables.py",
            "tests/test_claims_figure.py",
            "tests/test_make_figures.py",
        ],
    },
}


def group_of(source: str) -> str:
    """The group a source file belongs to."""
    for name, group in GROUPS.items():
        if source in group["sources"]:
            return name
    raise KeyError(f"{source} is not in the mutated core (tools/mutants/targets.py)")
