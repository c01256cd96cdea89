"""scripts/gpu_acceptance.py runs end to end on the CPU (--device cpu --tiny) with the device image's
packages only (hydra, omegaconf and pycocotools made unimportable), so it never rots before a GPU is lent;
each check group runs in its own process, so a crash or a sticky device error costs only its own rows;
--deadline-s kills what runs past it; the exit status is 1 exactly when a row FAILs; and the checks that
exist to catch a slip do catch it (planted: a wrong amp step, resume copies, an autocast)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tools.acceptance import data_ddp
from tools.acceptance.isolate import Group
from tools.acceptance.runner import Context, Row, run_check, table

BLOCKED = ("omegaconf", "hydra", "pycocotools")
# On PYTHONPATH as sitecustomize.py: every process of the run (the script, its forkserver and check
# groups, the DDP check's spawned ranks) starts with the three packages unimportable, as on the device.
BLOCKER = f"""import importlib.abc, sys


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked: the device image does not have it", name=name)
        return None


sys.meta_path.insert(0, _Block())
"""


def blocked_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "blocker").mkdir(exist_ok=True)
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path / "blocker")}


@pytest.mark.slow
def test_tiny_cpu_run_passes_with_the_device_images_packages_only(tmp_path):
    """The documented command, from the repository root, as CI's rehearsal of the device run."""
    out = tmp_path / "acceptance.json"
    cmd = [sys.executable, "-m", "scripts.gpu_acceptance", "--device", "cpu", "--tiny", "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=blocked_env(tmp_path), capture_output=True, text=True, timeout=400
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["checks"]}
    assert not [n for n, r in rows.items() if r["status"] == "FAIL"]
    imports = rows["env.trainer_imports"]
    assert imports["status"] == "PASS" and imports["numbers"]["absent"] == list(BLOCKED)  # the blocker held
    for name in (
        "amp.fp16_inf_step_skipped.default",
        "amp.fp16_inf_step_skipped.fused",
        "optim.adamx.fused",
        "optim.sophiag.foreach",
        "determinism.classification",
        "determinism.detection",
        "determinism.segmentation",
        "loss.classification.vs_cpu",
        "loss.detection.vs_cpu",
        "loss.segmentation.vs_cpu",
        "trainer.resume_exact",
        "trainer.syncs_after_resume",
        "ddp.gloo.detection_grad_ratio",
    ):
        assert rows[name]["status"] == "PASS", rows[name]
    assert rows["env"]["numbers"]["torch"] == torch.__version__
    assert rows["model.yolov7_tiny"]["numbers"]["syncs_per_step"] <= 5
    assert rows["model.digits_cnn"]["numbers"]["syncs_per_step"] <= 2
    assert rows["data.cifar_device_loader"]["numbers"]["vs_model"] > 0  # the models' img/s reached it
    assert report["meta"]["isolation"] == "one process per check group"
    assert "PASS" in proc.stdout and "total" in proc.stdout
    print(f"tiny CPU acceptance run: {seconds:.1f} s")


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


@pytest.mark.slow
def test_the_script_and_the_trainer_import_without_hydra_omegaconf_or_pycocotools(tmp_path):
    """The GPU image has torch, torchvision, numpy, pillow and scipy only: nothing else may be needed to start."""
    code = (
        "import experiments.train.trainer, experiments.tasks, models, scripts.gpu_acceptance\nprint('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=blocked_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-c", "import omegaconf"],
        cwd=ROOT,
        env=blocked_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker itself works


# ---------------------------------------------------------------- isolation, deadline, exit status


def run_main(monkeypatch, tmp_path, groups, *args):
    """scripts/gpu_acceptance.main with ``groups`` as its checks; (exit status, rows by name, seconds)."""
    import scripts.gpu_acceptance as script

    monkeypatch.setattr(script, "CHECKS", groups)
    out = tmp_path / "acceptance.json"
    start = time.perf_counter()
    code = script.main(["--device", "cpu", "--tiny", "--out", str(out), *args])
    seconds = time.perf_counter() - start
    rows = {r["name"]: r for r in json.loads(out.read_text())["checks"]}
    return code, rows, seconds


def plant(name: str, arg: str | None = None) -> Group:
    return Group(f"plant.{name}", f"tests.scripts.acceptance_plants:{name}", arg)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_a_dying_check_and_a_sticky_error_lose_only_their_own_rows(monkeypatch, tmp_path, capsys):
    groups = [plant("ok"), plant("crash"), plant("sticky"), plant("ok_again")]
    code, rows, _ = run_main(monkeypatch, tmp_path, groups)
    assert code == 1  # some row FAILed
    assert rows["plant.ok"]["status"] == "PASS" and rows["plant.ok_again"]["status"] == "PASS"
    assert rows["plant.ok"]["numbers"]["pid"] != rows["plant.ok_again"]["numbers"]["pid"]  # one process each
    assert rows["plant.crash"]["status"] == "FAIL"
    assert "killed by SIGABRT" in rows["plant.crash"]["note"]
    assert rows["plant.sticky"]["status"] == "FAIL"
    assert rows["plant.sticky"]["note"].startswith("RuntimeError: CUDA error: device-side assert triggered (")
    assert rows["plant.sticky.device_after"]["status"] == "FAIL"
    assert list(rows) == [
        "plant.ok",
        "plant.crash",
        "plant.sticky",
        "plant.sticky.device_after",
        "plant.ok_again",
    ]
    assert "FAILED: plant.crash, plant.sticky, plant.sticky.device_after" in capsys.readouterr().out


@pytest.mark.heavy
def test_exit_status_is_zero_only_without_a_fail(monkeypatch, tmp_path):
    assert run_main(monkeypatch, tmp_path, [plant("ok")])[0] == 0
    code, rows, _ = run_main(monkeypatch, tmp_path, [plant("ok"), plant("fails")])
    assert code == 1 and rows["plant.fails"]["status"] == "FAIL"


@pytest.mark.slow
def test_the_deadline_kills_the_running_group_and_its_workers(monkeypatch, tmp_path):
    run_main(monkeypatch, tmp_path, [plant("ok")])  # the forkserver is up: the deadline below is the checks'
    groups = [plant("ok"), plant("sleeper", str(tmp_path)), plant("ok_again")]
    deadline = 6.0
    code, rows, seconds = run_main(monkeypatch, tmp_path, groups, "--deadline-s", str(deadline))
    assert seconds < deadline + 10  # the margin docs/benchmarks.md states
    assert rows["plant.ok"]["status"] == "PASS"
    assert rows["plant.sleeper"]["status"] == "WARN"
    assert rows["plant.sleeper"]["note"].startswith("killed at --deadline-s")
    assert (
        rows["plant.ok_again"]["status"] == "SKIP" and "past --deadline-s" in rows["plant.ok_again"]["note"]
    )
    assert code == 0  # nothing FAILed; what did not finish is WARN/SKIP, named in the table
    deadline_at = time.monotonic() + 5
    pids = [int((tmp_path / f).read_text()) for f in ("check.pid", "worker.pid")]
    while any(alive(p) for p in pids) and time.monotonic() < deadline_at:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def test_a_bad_deadline_is_named():
    import scripts.gpu_acceptance as script

    with pytest.raises(SystemExit):
        script.main(["--deadline-s", "0"])


# ---------------------------------------------------------------- the checks themselves can fail


def test_amp_check_fails_when_a_skipped_step_still_moves_a_step_counter():
    """An optimizer that takes GradScaler's found_inf itself (as torch's fused ones do) and, on an inf
    step, leaves the parameters alone but advances the first parameter's step counter. The old comparison
    held references to the live counters (and kept only the last parameter's state), so it passed."""
    import adamx
    from tools.acceptance.env_optim import check_fp16_skip

    class WrongStep(adamx.AdamX):
        _step_supports_amp_scaling = True  # GradScaler sets .grad_scale and .found_inf, calls step()

        @torch.no_grad()
        def step(self, closure=None):
            grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if found_inf is not None and float(found_inf) > 0:
                self.state[params[0]]["step"] += 1  # the planted slip: a skipped step counted
                return None
            if grad_scale is not None:
                torch._foreach_div_([p.grad for p in params], grad_scale.double().item())
            return super().step(closure)

    ctx = Context(torch.device("cpu"), tiny=True, compile_models=set())
    rows = {r.name: r for r in check_fp16_skip(ctx, WrongStep)}
    for row in rows.values():
        assert row.status == "FAIL" and row.numbers["state_untouched"] is False, row
        assert row.numbers["params_untouched"] is True and row.numbers["next_step_updates"] is True
    assert {r.status for r in check_fp16_skip(ctx)} == {"PASS"}


@pytest.mark.heavy
def test_resume_syncs_are_counted_inside_the_training_steps_only(monkeypatch):
    """A resume that copies many tensors to the device (stood in for by torch.tensor(list), a blocking
    host-to-device copy in the CPU emulation) costs nothing per step; counting the whole fit() made it
    100 / 4 = 25 syncs per step here, a FAIL (121 per step on CUDA for EfficientNetV2-M + RAdam)."""
    from experiments.train.trainer import Trainer
    from tools.acceptance.training import check_resume

    real = Trainer.resume
    copies = []

    def resume_with_copies(self):
        found = real(self)
        if found:
            copies.extend(torch.tensor([1.0, 2.0]) for _ in range(100))
        return found

    monkeypatch.setattr(Trainer, "resume", resume_with_copies)
    ctx = Context(torch.device("cpu"), tiny=True, compile_models=set())
    rows = {r.name: r for r in check_resume(ctx)}
    assert len(copies) == 100  # the resumed fit did resume
    syncs = rows["trainer.syncs_after_resume"]
    assert syncs.status == "PASS", syncs
    assert syncs.numbers["syncs_per_step_resumed"] == syncs.numbers["syncs_per_step_fresh"]
    assert syncs.numbers["steps_counted"] == 3  # steps 2..4 of the resumed epoch
    assert rows["trainer.resume_exact"].status == "PASS"


@pytest.mark.heavy
def test_resume_runs_deterministic(monkeypatch):
    """cuDNN may pick nondeterministic algorithms outside deterministic(): resume_exact would FAIL on CUDA
    for no fault of the Trainer's."""
    import tools.acceptance.training as training

    seen = []
    real = training.trainer_run

    def spy(*args, **kwargs):
        seen.append(
            (
                torch.are_deterministic_algorithms_enabled(),
                torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark,
            )
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "trainer_run", spy)
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    training.check_resume(Context(torch.device("cpu"), tiny=True, compile_models=set()))
    assert seen and set(seen) == {(True, True, False)}
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before  # restored


@pytest.mark.slow
def test_loss_vs_cpu_fails_on_a_planted_autocast(monkeypatch):
    """The device side under bfloat16 autocast (the slip the row exists for) is far outside the tolerance."""
    import tools.acceptance.vs_cpu as vs_cpu

    ctx = Context(torch.device("cpu"), tiny=True, compile_models=set())
    good = {r.name: r for r in vs_cpu.check_losses_vs_cpu(ctx)}
    assert {r.status for r in good.values()} == {"PASS"}
    assert set(good) == {f"loss.{t}.vs_cpu" for t in ("classification", "detection", "segmentation")}
    monkeypatch.setattr(vs_cpu, "device_context", lambda ctx: torch.autocast("cpu", dtype=torch.bfloat16))
    bad = {r.name: r for r in vs_cpu.check_losses_vs_cpu(ctx)}
    assert {r.status for r in bad.values()} == {"FAIL"}, bad


def test_tolerance_grades_a_gap_against_the_measured_fp32_spread():
    from tools.acceptance.vs_cpu import grade_gap

    assert grade_gap(1e-6, 1e-7) == ("PASS", pytest.approx(1.6e-6))
    assert grade_gap(2e-6, 1e-7)[0] == "WARN"
    assert grade_gap(2.0**-12 * 1.01, 1e-7)[0] == "FAIL"  # TF32-sized on a well-conditioned loss
    assert grade_gap(3e-8, 0.0) == ("PASS", 2.0**-20)  # the floor
    # the gradient's bands: a thousand times the CPU's own spread, or bfloat16-sized, before a FAIL
    assert grade_gap(1e-3, 1e-4, 2.0**-8, 64.0)[0] == "PASS"
    assert grade_gap(0.05, 1e-4, 2.0**-8, 64.0)[0] == "WARN"
    assert grade_gap(0.2, 1e-4, 2.0**-8, 64.0)[0] == "FAIL"
    assert grade_gap(0.007, 1.5e-7, 2.0**-8, 64.0)[0] == "FAIL"  # digits_cnn under a planted bf16 autocast


def test_a_synchronize_that_raises_after_a_check_becomes_a_row_not_an_exception(monkeypatch):
    """The old runner's ``finally: torch.cuda.synchronize()`` re-raised a sticky error and lost the rows."""

    def sticky(device=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setattr(torch.cuda, "synchronize", sticky)
    ctx = Context(torch.device("cuda", 0), tiny=True, compile_models=set())
    rows = run_check("g", lambda c: [Row("g.first", "PASS")], ctx)
    assert [(r.name, r.status) for r in rows] == [("g.first", "PASS"), ("g.device_after", "FAIL")]
    assert rows[1].note == (
        "device unusable after the check: RuntimeError: CUDA error: an illegal memory access was encountered"
    )


@pytest.mark.slow
def test_the_preloaded_modules_leave_cuda_untouched():
    """The forkserver imports these once; CUDA initialised there would be unusable in every group."""
    code = (
        "import torch, tools.acceptance.preload as p, importlib\n"
        "assert all(importlib.import_module(m) for m in p.MODULES)\n"
        "print(torch.cuda.is_initialized())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
