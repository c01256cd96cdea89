"""DDP under torchrun: 2 CPU processes on gloo end with identical parameters on both ranks, equal (to float
rounding) to one process trained with the same global batch.

Run as a script by torchrun (``python -m torch.distributed.run ... tests/test_ddp.py OUT``), it is the worker.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# 360 training images, global batch 32 with drop_last: 11 steps; dropout off so both layouts compute the same thing.
OVERRIDES = [
    "trainer.epochs=1",
    "trainer.device=cpu",
    "trainer.progress=false",
    "dataset.test_size=1437",
    "dataset.batch_size=32",
    "dataset.drop_last=true",
    "model.dropout=0.0",
    "trainer.log_every=4",
]


def train(out: Path, name: str) -> Path:
    """Run the digits config into ``out/name`` and save this rank's final parameters beside it."""
    from hydra import compose, initialize_config_dir

    from experiments.launch import run_experiment
    from experiments.rundir import run_dir
    from experiments.trainer import Hooks

    overrides = [*OVERRIDES, f"runs_root={out / name}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    rank = int(os.environ.get("RANK", "0"))

    def save_params(trainer, epoch):
        params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(params, out / f"{name}_rank{rank}.pt")

    run_experiment(cfg, overrides, hooks=Hooks(on_epoch_end=save_params))
    return run_dir(cfg)


@pytest.mark.slow
def test_two_gloo_processes_match_each_other_and_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    single_dir = train(tmp_path, "single")

    rank0 = torch.load(tmp_path / "ddp_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp_rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single_rank0.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(
            rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=f"DDP != 1 process: {key}"
        )

    ddp_dir = Path(str(single_dir).replace(str(tmp_path / "single"), str(tmp_path / "ddp")))
    ddp_train, one_train = pd.read_csv(ddp_dir / "train.csv"), pd.read_csv(single_dir / "train.csv")
    assert len(ddp_train) == len(one_train) == 11
    assert (ddp_train.lr == one_train.lr).all()
    torch.testing.assert_close(
        torch.tensor(ddp_train.loss.values), torch.tensor(one_train.loss.values), rtol=1e-4, atol=1e-5
    )
    ddp_eval, one_eval = pd.read_csv(ddp_dir / "eval.csv"), pd.read_csv(single_dir / "eval.csv")
    assert abs(ddp_eval.top1_err[0] - one_eval.top1_err[0]) <= 100 / 360 + 1e-9  # at most one image flips
    assert abs(ddp_eval.loss[0] - one_eval.loss[0]) < 1e-4  # sharded evaluation covers all 360 images once
    summary = pd.read_json(ddp_dir / "summary.json", typ="series")
    assert summary["world_size"] == 2 and summary["steps"] == 11


def test_ranks_split_each_global_batch_of_the_single_process_order():
    from experiments.loaders import GlobalBatchSampler

    one = list(GlobalBatchSampler(100, 32, seed=5, rank=0, world_size=1, drop_last=True))
    ranks = [list(GlobalBatchSampler(100, 32, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == 96 and all(len(r) == 48 for r in ranks)
    for b in range(3):
        merged = ranks[0][16 * b : 16 * (b + 1)] + ranks[1][16 * b : 16 * (b + 1)]
        assert merged == one[32 * b : 32 * (b + 1)]
    assert not set(ranks[0]) & set(ranks[1])
    sampler = GlobalBatchSampler(100, 32, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != list(GlobalBatchSampler(100, 32, seed=5))  # a new order every epoch ...
    again = GlobalBatchSampler(100, 32, seed=5)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # ... replayed exactly on resume
    assert len(list(GlobalBatchSampler(100, 32, seed=5, drop_last=False))) == 100
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        GlobalBatchSampler(100, 32, seed=0, world_size=3)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    train(Path(sys.argv[1]), "ddp")
