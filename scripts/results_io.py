"""Read run directories (config.yaml, train.csv, eval.csv, summary.json) for the table and figure scripts.

A run directory is ``<runs_root>/<experiment>/<model>/<optimizer with + as _>/seed<k>/`` (docs/architecture.md).
Only the files are trusted, not the path: the experiment, model, optimizer and seed come from
config.yaml when it is there, from the path otherwise, so runs copied in from elsewhere still tabulate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_YAML = ROOT / "results" / "paper.yaml"
# How every number of the paper was made (the authors' train_cifar100.py: init_seeds(seed=42) with
# torch.use_deterministic_algorithms(True)); our runs reproduce it with ``+protocol=authors``.
PAPER_PROTOCOL = "single run, seed 42, deterministic algorithms"


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    experiment: str
    model: str
    optimizer: str
    seed: int | None
    status: str  # finished / failed / running / unknown (no summary.json)
    reason: str | None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_csv(self) -> Path:
        return self.path / "eval.csv"

    @property
    def train_csv(self) -> Path:
        return self.path / "train.csv"

    def read_eval(self) -> pd.DataFrame | None:
        """eval.csv as a DataFrame, or None when absent or empty."""
        return _read_csv(self.eval_csv)

    def read_train(self) -> pd.DataFrame | None:
        """train.csv as a DataFrame, or None when absent or empty."""
        return _read_csv(self.train_csv)


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    return df if len(df) else None


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_run(path: Path) -> Run:
    """Read the run directory ``path`` (which holds config.yaml or summary.json)."""
    path = Path(path)
    config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    summary: dict[str, Any] = {}
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = {"status": "unknown", "reason": "summary.json is not valid JSON"}
    parts = path.parts
    seed = _get(config, "seed")
    if seed is None and parts[-1].startswith("seed") and parts[-1][4:].lstrip("-").isdigit():
        seed = int(parts[-1][4:])
    experiment = _get(config, "experiment_name") or (parts[-4] if len(parts) >= 4 else "unknown")
    model = _get(config, "model.name") or (parts[-3] if len(parts) >= 3 else "unknown")
    optimizer = _get(config, "optimizer.name") or (
        parts[-2].replace("_", "+") if len(parts) >= 2 else "unknown"
    )
    return Run(
        path=path,
        experiment=str(experiment),
        model=str(model),
        optimizer=str(optimizer),
        seed=None if seed is None else int(seed),
        status=str(summary.get("status", "unknown")),
        reason=summary.get("reason"),
        config=config,
        summary=summary,
    )


def find_runs(runs_root: Path | str) -> list[Run]:
    """Every run directory under ``runs_root`` (a folder holding config.yaml or summary.json), sorted."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    dirs = {p.parent for name in ("config.yaml", "summary.json") for p in root.rglob(name)}
    # Hydra's own .hydra/config.yaml is not a run directory.
    dirs = {d for d in dirs if d.name != ".hydra"}
    return sorted(
        (read_run(d) for d in dirs), key=lambda r: (r.experiment, r.model, r.optimizer, r.seed or 0)
    )


def load_paper(path: Path | str = PAPER_YAML) -> dict[str, Any]:
    """results/paper.yaml as a dict."""
    return yaml.safe_load(Path(path).read_text())


def metric_series(df: pd.DataFrame, spec: dict[str, Any]) -> pd.Series | None:
    """The column of ``df`` that holds the metric described by ``spec`` (paper.yaml ``metrics`` entry),
    scaled into the paper's unit; None when no candidate column is present."""
    for name in spec.get("candidates", []):
        if name in df.columns:
            return pd.to_numeric(df[name], errors="coerce") * float(spec.get("scale", 1.0))
    return None


def best_and_final(df: pd.DataFrame, spec: dict[str, Any]) -> tuple[float, float, float] | None:
    """(best value, its epoch, final value) of one metric in one eval.csv: best is the minimum for
    errors and the maximum otherwise (the paper's best-epoch protocol), final is the last row."""
    series = metric_series(df, spec)
    if series is None:
        return None
    valid = series.dropna()
    if valid.empty:
        return None
    idx = valid.idxmax() if spec["higher_is_better"] else valid.idxmin()
    epoch = float(df.loc[idx, "epoch"]) if "epoch" in df.columns else float(idx)
    final = float(series.iloc[-1]) if not math.isnan(series.iloc[-1]) else float("nan")
    return float(valid.loc[idx]), epoch, final


def train_loss_at(df: pd.DataFrame, step: int, window: int) -> float:
    """Mean per-step training loss over steps (step - window, step] of a train.csv; NaN when the log
    has not reached ``step`` (a single step's loss is one batch's: too noisy to compare rows by)."""
    steps = pd.to_numeric(df["step"], errors="coerce")
    if steps.empty or steps.max() < step:
        return math.nan
    part = pd.to_numeric(df.loc[(steps > step - window) & (steps <= step), "loss"], errors="coerce")
    return float(part.mean()) if len(part) else math.nan


def train_loss_area(df: pd.DataFrame, start: int, end: int) -> float:
    """Area under the per-step training loss over steps start+1 .. end (unit step width: the sum);
    NaN unless the log reaches ``end`` with every one of those steps present and finite."""
    steps = pd.to_numeric(df["step"], errors="coerce")
    if steps.empty or steps.max() < end:
        return math.nan
    part = pd.to_numeric(df.loc[(steps > start) & (steps <= end), "loss"], errors="coerce")
    if len(part) != end - start or part.isna().any():
        return math.nan
    return float(part.sum())


def epoch_losses(df: pd.DataFrame) -> pd.DataFrame:
    """Per epoch of a train.csv: ``step`` (its last step) and ``loss`` (the mean per-step loss), by epoch."""
    return df.groupby("epoch", sort=True).agg(step=("step", "max"), loss=("loss", "mean"))


def first_reaching(x: pd.Series, y: pd.Series, value: float, higher_is_better: bool) -> float | None:
    """The first x at which y reaches ``value`` (>= for higher-is-better metrics, <= otherwise), None if it
    never does; NaN values never reach a target."""
    y = pd.to_numeric(y, errors="coerce")
    hit = (y >= value) if higher_is_better else (y <= value)  # NaN compares False: it never reaches
    if not hit.any():
        return None
    return float(pd.to_numeric(x, errors="coerce")[hit].iloc[0])


def time_to_target(run: Run, target: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """The first optimizer step at which ``run`` reaches ``target``, None if it never does.

    ``target`` is ``{metric: <paper.yaml metric>, value: v}`` (scored on eval.csv at each evaluation;
    the step of an evaluation is its ``step`` column, else epoch x steps_per_epoch) or
    ``{train_loss: v}`` (the mean training loss of each epoch in train.csv, reached at the epoch's
    last step: one batch's loss is too noisy to be a target)."""
    if "train_loss" in target:
        df = run.read_train()
        if df is None or "loss" not in df:
            return None
        per_epoch = epoch_losses(df)
        return first_reaching(per_epoch["step"], per_epoch["loss"], float(target["train_loss"]), False)
    spec = metrics[target["metric"]]
    df = run.read_eval()
    if df is None:
        return None
    series = metric_series(df, spec)
    if series is None:
        return None
    if "step" in df.columns:
        x = df["step"]
    else:
        x = pd.to_numeric(df["epoch"], errors="coerce") * float(
            run.summary.get("steps_per_epoch") or math.nan
        )
    return first_reaching(x, series, float(target["value"]), bool(spec["higher_is_better"]))


def steps_per_epoch(run: Run, df: pd.DataFrame | None = None) -> int | None:
    """The run's steps per epoch: summary.json's, else counted in train.csv's first epoch."""
    spe = run.summary.get("steps_per_epoch")
    if isinstance(spe, int) and spe > 0:
        return spe
    df = run.read_train() if df is None else df
    if df is None or "epoch" not in df or not len(df):
        return None
    first = pd.to_numeric(df["epoch"], errors="coerce").min()
    return int((pd.to_numeric(df["epoch"], errors="coerce") == first).sum()) or None


def epoch_end(step: int, per_epoch: int) -> int:
    """The last step of the epoch that contains ``step`` (steps are 1-based)."""
    return -(-int(step) // int(per_epoch)) * int(per_epoch)


def read_full_loss(run: Run) -> pd.DataFrame | None:
    """full_loss.csv (scripts/probe_run.py: the eval-mode, whole-training-set loss in float64), or None."""
    return _read_csv(run.path / "full_loss.csv")


def full_loss_at(df: pd.DataFrame | None, step: int) -> float:
    """The float64 full-batch training loss logged at exactly ``step``; NaN when not logged there."""
    if df is None or "full_loss" not in df:
        return math.nan
    hit = pd.to_numeric(df["full_loss"], errors="coerce")[pd.to_numeric(df["step"], errors="coerce") == step]
    return float(hit.iloc[-1]) if len(hit) else math.nan


def train_losses_between(df: pd.DataFrame, start: int, end: int) -> pd.Series | None:
    """The per-step losses of steps start+1 .. end, or None unless every one is there and finite."""
    steps = pd.to_numeric(df["step"], errors="coerce")
    if steps.empty or steps.max() < end:
        return None
    part = pd.to_numeric(df.loc[(steps > start) & (steps <= end), "loss"], errors="coerce")
    if len(part) != end - start or part.isna().any():
        return None
    return part
