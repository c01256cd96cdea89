"""Read run directories (config.yaml, train.csv, eval.csv, summary.json) for the table and figure scripts.

A run directory is ``<runs_root>/<experiment>/<model>/<optimizer with + as _>/seed<k>/`` (docs/architecture.md).
Only the files are trusted, not the path: the experiment, model, optimizer and seed come from
config.yaml when it is there, from the path otherwise, so runs copied in from elsewhere still tabulate.
"""

from __future__ import annotations

import json
import math
import sys
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
if str(ROOT) not in sys.path:  # the harness (experiments/, models/) is used from the checkout, as run.py does
    sys.path.insert(0, str(ROOT))


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
