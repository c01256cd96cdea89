"""Run directories with exact values: the path rule (and Hydra's copy of it), which temporaries count as
stale, atomic writes that fail, the CSV logs' truncation boundary on resume, and an eval log whose last
row is NaN (what best, final, best.pt and the table reader report)."""

import json
import math
import os
import signal
import stat

import pandas as pd
import pytest
import torch
from tests.helpers import compose_config
from omegaconf import OmegaConf

from experiments.train import files
from experiments.train.loaders import train_loader
from experiments.runs.rundir import path_safe, run_dir
from experiments.train.files import CsvLog, remove_stale_temporaries, write_json
from experiments.tasks import build_task
from experiments.train.checkpoint import drop_torn_line as _drop_torn_line
from experiments.train.checkpoint import row_step as _row_step
from experiments.train.trainer import Hooks, RunInterrupted, Trainer, TrainerConfig
from scripts.results_io import best_and_final

# ------------------------------------------------------------------ paths


def test_run_dir_is_root_experiment_model_optimizer_seed_with_safe_names(tmp_path):
    """Catches a path part dropped, reordered, or left with '+', '/' or ' ' in it."""
    cfg = OmegaConf.create(
        {
            "runs_root": str(tmp_path),
            "experiment_name": "cifar 100",
            "model": {"name": "convnext/t"},
            "optimizer": {"name": "adam+adax"},
            "seed": 3,
        }
    )
    assert run_dir(cfg) == tmp_path / "cifar_100" / "convnext_t" / "adam_adax" / "seed3"
    assert path_safe("a+b/c d") == "a_b_c_d" and path_safe(7) == "7"


def test_hydra_run_dir_is_the_same_rule(tmp_path):
    """Catches configs/config.yaml and run_dir() disagreeing (a resume would look in another folder)."""
    cfg = compose_config([f"runs_root={tmp_path}", "optimizer=adam_adax", "seed=4"], hydra=True)
    assert run_dir(cfg).parts[-2:] == ("adam_adax", "seed4")
    assert str(run_dir(cfg)) == cfg.hydra.run.dir
    assert str(run_dir(cfg)) == f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"


# ------------------------------------------------------------------ temporaries and atomic writes


def test_only_dot_prefixed_tmp_files_are_stale(tmp_path):
    """Catches a glob that also deletes user files ending in .tmp, real run files, or directories."""
    stale = [".last.pt.k3j_x.tmp", ".summary.json.abc.tmp", "..tmp"]
    keep = ["last.pt", "notes.tmp", ".hidden", ".train.csv.tmp.bak", "eval.csv"]
    for name in stale + keep:
        (tmp_path / name).write_text("x")
    (tmp_path / ".folder.tmp").mkdir()
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [".folder.tmp"])
    assert remove_stale_temporaries(tmp_path) == []


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """Catches a temporary left behind (or the target replaced) when the writer raises."""
    target = tmp_path / "summary.json"
    write_json({"status": "running"}, target)

    def broken(handle):
        handle.write('{"status": "fin')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """Catches run files readable only by their owner (mkstemp's default) on a shared cluster."""
    write_json({}, tmp_path / "a.json")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------ CSV logs


def test_csv_log_header_once_fields_from_first_row_and_truncate_keeps_exact_rows(tmp_path):
    """Catches a second header on append, extra metric columns lost, or truncate off by one row."""
    path = tmp_path / "eval.csv"
    log = CsvLog(path, ["epoch", "step"])
    log.write([{"epoch": 1, "step": 4, "top1_err": 50.0}])
    log.close()
    log = CsvLog(path, ["epoch", "step"])  # a resumed session truncates to last.pt (learning the
    log.truncate(lambda row: _row_step(row) <= 4)  # file's header), then appends
    log.write([{"epoch": 2, "step": 8, "top1_err": 40.0}, {"epoch": 3, "step": 12, "top1_err": 30.0}])
    log.close()
    assert path.read_text().splitlines() == ["epoch,step,top1_err", "1,4,50.0", "2,8,40.0", "3,12,30.0"]
    log.truncate(lambda row: _row_step(row) <= 8)
    assert path.read_text().splitlines() == ["epoch,step,top1_err", "1,4,50.0", "2,8,40.0"]


def test_torn_rows_are_cut_and_never_pass_for_a_step(tmp_path):
    """Catches a torn last line kept (it would parse as a short row) or a whole final line cut."""
    path = tmp_path / "train.csv"
    path.write_text("step,epoch,loss\n1,1,0.5\n2,1,0.4\n3,1,0.")
    _drop_torn_line(path)
    assert path.read_text() == "step,epoch,loss\n1,1,0.5\n2,1,0.4\n"
    _drop_torn_line(path)  # a whole file is left alone
    assert path.read_text() == "step,epoch,loss\n1,1,0.5\n2,1,0.4\n"
    assert _row_step({"step": "7", "epoch": "1", "loss": "0.1"}) == 7
    assert _row_step({"step": "7", "epoch": "1", "loss": None}) == math.inf  # a short row
    assert _row_step({"step": "7", None: ["x"]}) == math.inf  # a long row
    assert _row_step({"step": "seven"}) == math.inf


# ------------------------------------------------------------------ trainer: resume and NaN tails


class ScriptedTask:
    """Classification training; evaluation returns the next scripted top1_err (lower is better)."""

    def __init__(self, values):
        self.inner = build_task("classification", num_classes=3)
        for name in ("name", "primary_metric", "higher_is_better", "metric_directions", "collate"):
            setattr(self, name, getattr(self.inner, name))
        self.to_device, self.batch_size, self.loss = (
            self.inner.to_device,
            self.inner.batch_size,
            self.inner.loss,
        )
        self.sampled_loss = None
        self.values = list(values)

    def evaluate(self, model, loader, ctx):
        return {"top1_err": self.values.pop(0)}


def _trainer(tmp_path, task, epochs, hooks=None):
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,)))
    model = torch.nn.Linear(4, 3)
    return Trainer(
        task=task,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        train_data=train_loader(data, task.collate, 4, seed=0),  # 4 steps per epoch
        eval_data=[],
        lr_factor=lambda step: 1.0,
        run_dir=tmp_path,
        config=TrainerConfig(device="cpu", progress=False, epochs=epochs, log_every=1),
        hooks=hooks,
    )


def test_resume_keeps_log_rows_up_to_and_including_the_checkpoint_step(tmp_path):
    """Catches '<' for '<=' in the resume truncation (the checkpoint step's own row lost) and rows past
    last.pt (or a torn one) surviving."""
    stop = Hooks(on_step_end=lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == 6 else None)
    with pytest.raises(RunInterrupted):
        _trainer(tmp_path, ScriptedTask([50.0]), 2, hooks=stop).fit()
    with open(tmp_path / "train.csv", "a") as handle:  # rows of a session killed after last.pt
        handle.write("7,2,0.5,0.01,1.0\n8,2,0.4,0.01,1.1\n9,2,0.")
    with open(tmp_path / "eval.csv", "a") as handle:
        handle.write("2,8,45.0,2.0\n")
    trainer = _trainer(tmp_path, ScriptedTask([]), 2)
    assert trainer.resume() and trainer.step == 6
    assert pd.read_csv(tmp_path / "train.csv").step.tolist() == [1, 2, 3, 4, 5, 6]
    assert pd.read_csv(tmp_path / "eval.csv").step.tolist() == [4]


def _summary(tmp_path):
    return json.loads((tmp_path / "summary.json").read_text())


def test_nan_last_evaluation_keeps_the_best_and_reports_the_nan_final(tmp_path):
    """Catches a NaN final evaluation taken as the best (or hiding the final), and best.pt overwritten."""
    summary = _trainer(tmp_path, ScriptedTask([50.0, 40.0, math.nan]), 3).fit()
    assert summary["best"]["top1_err"] == {"value": 40.0, "epoch": 2, "step": 8}
    assert summary["final"]["epoch"] == 3 and summary["final"]["step"] == 12
    assert math.isnan(summary["final"]["metrics"]["top1_err"])
    assert _summary(tmp_path)["best"]["top1_err"]["value"] == 40.0
    assert math.isnan(_summary(tmp_path)["final"]["metrics"]["top1_err"])
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 8
    evals = pd.read_csv(tmp_path / "eval.csv")
    assert evals.step.tolist() == [4, 8, 12] and math.isnan(evals.top1_err.iloc[-1])


def test_nan_first_evaluation_is_never_the_best(tmp_path):
    """Catches a NaN recorded as best when there is no earlier value (every later comparison with NaN
    is false, so it would stick)."""
    summary = _trainer(tmp_path, ScriptedTask([math.nan, 30.0]), 2).fit()
    assert summary["best"]["top1_err"] == {"value": 30.0, "epoch": 2, "step": 8}
    only_nan = tmp_path / "nan"
    summary = _trainer(only_nan, ScriptedTask([math.nan]), 1).fit()
    assert summary["best"] == {} and not (only_nan / "best.pt").exists()


SPEC = {"candidates": ["top1_err"], "higher_is_better": False, "scale": 1.0}


def test_table_reader_best_and_final_with_a_nan_tail():
    """Catches the final value falling back to the last finite row, or NaN winning the best."""
    df = pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "top1_err": [50.0, 40.0, math.nan]})
    best, epoch, final = best_and_final(df, SPEC)
    assert (best, epoch) == (40.0, 2.0) and math.isnan(final)
    df = pd.DataFrame({"epoch": [1, 2, 3], "step": [4, 8, 12], "top1_err": [50.0, math.nan, 45.0]})
    assert best_and_final(df, SPEC) == (45.0, 3.0, 45.0)
    assert best_and_final(df, {**SPEC, "higher_is_better": True}) == (50.0, 1.0, 45.0)
    df = pd.DataFrame({"epoch": [1, 2], "step": [4, 8], "top1_err": [math.nan, math.nan]})
    assert best_and_final(df, SPEC) is None


def test_a_tie_keeps_the_earlier_best_and_final_is_the_last_evaluation(tmp_path):
    """Catches '<=' for '<' in the best comparison (a tie would move best.pt to a later epoch)."""
    summary = _trainer(tmp_path, ScriptedTask([40.0, 40.0, 45.0]), 3).fit()
    assert summary["best"]["top1_err"] == {"value": 40.0, "epoch": 1, "step": 4}
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 4
    assert summary["final"] == {"epoch": 3, "step": 12, "metrics": {"top1_err": 45.0}}
