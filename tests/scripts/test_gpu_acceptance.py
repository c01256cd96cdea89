"""scripts/gpu_acceptance.py runs end to end on the CPU (--device cpu --tiny), so it never rots before a GPU
is lent; its runner isolates failing checks. (The DDP check's body is tests/test_detection_ddp.py's
function; here it is skipped to keep the run short and its row-building checked with a stub.)"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT
from tools.acceptance import data_ddp
from tools.acceptance.runner import Context, Row, run_check, table


@pytest.mark.slow
def test_tiny_cpu_run_passes_and_writes_json(tmp_path):
    out = tmp_path / "acceptance.json"
    cmd = [
        sys.executable,
        "scripts/gpu_acceptance.py",
        "--device",
        "cpu",
        "--tiny",
        "--skip",
        "ddp",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["checks"]}
    assert not [n for n, r in rows.items() if r["status"] == "FAIL"]
    for name in (
        "amp.fp16_inf_step_skipped.default",
        "amp.fp16_inf_step_skipped.fused",
        "optim.adamx.fused",
        "optim.sophiag.foreach",
        "determinism.classification",
        "determinism.detection",
        "determinism.segmentation",
        "trainer.resume_exact",
    ):
        assert rows[name]["status"] == "PASS", rows[name]
    assert rows["env"]["numbers"]["torch"] == torch.__version__
    assert rows["model.yolov7_tiny"]["numbers"]["syncs_per_step"] <= 5
    assert rows["model.digits_cnn"]["numbers"]["syncs_per_step"] <= 2
    assert rows["data.cifar_device_loader"]["numbers"]["device_img_s"] > 0
    assert "PASS" in proc.stdout and "total" in proc.stdout


def test_a_failing_check_becomes_one_fail_row_and_the_next_still_runs():
    ctx = Context(torch.device("cpu"), tiny=True, compile_models=set())

    def broken(ctx):
        raise RuntimeError("CUDA error: device-side assert triggered\nmore lines")

    rows = run_check("broken", broken, ctx) + run_check(
        "fine", lambda c: [Row("fine", "PASS", {"x": 1.5})], ctx
    )
    assert [r.status for r in rows] == ["FAIL", "PASS"]
    assert rows[0].note.startswith("RuntimeError: CUDA error: device-side assert triggered (")
    assert "more lines" not in rows[0].note
    text = table(rows)
    assert "FAIL 1" in text and "PASS 1" in text and "x=1.5" in text


def test_ddp_check_grades_the_ratio(monkeypatch):
    import tools.acceptance.ddp as ddp

    ctx = Context(torch.device("cpu"), tiny=True, compile_models=set())
    for ratio, status in ((1.0, "PASS"), (0.5, "FAIL")):
        fake = {"ratio": ratio, "cosine": 1.0, "max_rel_gap": 0.0}
        monkeypatch.setattr(ddp, "detection_gradient_ratio", lambda *a, fake=fake, **k: fake)
        (row,) = data_ddp.check_ddp(ctx)
        assert row.name == "ddp.gloo.detection_grad_ratio" and row.status == status


def test_bench_train_applies_trainer_settings_to_both_loops(monkeypatch):
    """tools/bench/bench_train.py: the bare loop runs under the config's autocast and channels_last, and the
    Trainer gets the config's trainer section (it ignored trainer.* before)."""
    import tools.bench.bench_train as bench
    from experiments.tasks.classification import ClassificationTask
    from tests.helpers import compose_config

    cfg = compose_config(["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=false"])
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            seen.append((x.is_contiguous(memory_format=torch.channels_last), self.conv(x).dtype))
            return self.conv(x).mean((2, 3))

    def fresh(cfg, num_classes, device):
        model = Spy()
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    monkeypatch.setattr(bench, "fresh", fresh)
    task = ClassificationTask(num_classes=4)
    data = [(torch.rand(3, 8, 8), i % 4) for i in range(8)]
    assert bench.minimal_loop(cfg, task, data, 4, 4, torch.device("cpu"), 0) > 0
    assert seen == [(True, torch.bfloat16)] * 2
    config = bench.trainer_config(cfg, torch.device("cpu"))
    assert (config.precision, config.channels_last, config.compile, config.epochs) == ("bf16", True, False, 1)


def test_the_script_and_the_trainer_import_without_hydra_omegaconf_or_pycocotools():
    """The GPU image has torch, torchvision, numpy and scipy only: nothing else may be needed to start."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('omegaconf', 'hydra', 'pycocotools'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.path[:0] = ['.', 'scripts']\n"
        "import experiments.train.trainer, experiments.tasks, models, gpu_acceptance\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
