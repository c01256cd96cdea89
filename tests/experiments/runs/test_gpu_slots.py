"""GPU claiming without a GPU: a stated device count, real processes holding real flocks."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from experiments.runs import gpu_slots
from experiments.runs.gpu_slots import NoFreeGpu, claim_gpu, recommend_jobs_per_gpu

from tests.helpers import ROOT

HOLDER = """
import json, sys
from experiments.runs.gpu_slots import claim_gpu
claim = claim_gpu(jobs_per_gpu=int(sys.argv[1]), device_count=int(sys.argv[2]), lock_dir=sys.argv[3], wait=False)
print(json.dumps({"index": claim.index, "gpu": claim.gpu_id, "slot": claim.slot}), flush=True)
sys.stdin.read()  # hold the claim until the test closes stdin (or kills us)
"""


class Holder:
    """A child process that claims a slot and holds it until closed or killed."""

    def __init__(self, lock_dir, jobs_per_gpu=1, device_count=2, visible=None):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(jobs_per_gpu), str(device_count), str(lock_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(self.proc.stderr.read())
        self.claim = json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture
def holders():
    made = []
    yield made
    for holder in made:
        if holder.proc.poll() is None:
            holder.proc.kill()
        holder.proc.wait()


@pytest.fixture(autouse=True)
def no_visible_devices_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_two_processes_never_share_a_slot_and_a_third_finds_none(tmp_path, holders):
    a = Holder(tmp_path)
    holders.append(a)
    b = Holder(tmp_path)
    holders.append(b)
    assert {a.claim["index"], b.claim["index"]} == {0, 1}
    assert a.claim["slot"] == b.claim["slot"] == 0
    with pytest.raises(NoFreeGpu, match="All 2 GPU slots"):
        claim_gpu(device_count=2, lock_dir=tmp_path, wait=False)
    b.close()  # a clean exit frees its slot
    with claim_gpu(device_count=2, lock_dir=tmp_path, wait=False) as claim:
        assert claim.index == b.claim["index"]
        assert str(claim.device) == f"cuda:{b.claim['index']}"


def test_a_killed_job_frees_its_slot(tmp_path, holders):
    victim = Holder(tmp_path, device_count=1)
    holders.append(victim)
    with pytest.raises(NoFreeGpu):
        claim_gpu(device_count=1, lock_dir=tmp_path, wait=False)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=30)
    claim = claim_gpu(device_count=1, lock_dir=tmp_path, wait=False)
    assert claim.index == 0 and claim.held
    claim.release()
    assert not claim.held
    claim.release()  # idempotent


def test_jobs_per_gpu_gives_k_slots_per_gpu_spread_before_doubling(tmp_path, holders):
    for _ in range(4):
        holders.append(Holder(tmp_path, jobs_per_gpu=2, device_count=2))
    got = [(h.claim["index"], h.claim["slot"]) for h in holders]
    assert got == [(0, 0), (1, 0), (0, 1), (1, 1)]
    with pytest.raises(NoFreeGpu, match="All 4 GPU slots"):
        claim_gpu(jobs_per_gpu=2, device_count=2, lock_dir=tmp_path, wait=False)


def test_cuda_visible_devices_orders_the_indices_and_names_the_locks(tmp_path, holders, monkeypatch):
    first = Holder(tmp_path, device_count=2, visible="3,1")
    holders.append(first)
    assert first.claim == {"index": 0, "gpu": "3", "slot": 0}  # cuda:0 is physical GPU 3
    # Another sweep sees the same two GPUs in the other order: its cuda:0 (GPU 1) is free, GPU 3 is not.
    second = Holder(tmp_path, device_count=2, visible="1,3")
    holders.append(second)
    assert second.claim == {"index": 0, "gpu": "1", "slot": 0}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(NoFreeGpu):
        claim_gpu(device_count=1, lock_dir=tmp_path, wait=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,1")
    with claim_gpu(device_count=3, lock_dir=tmp_path, wait=False) as claim:
        assert (claim.index, claim.gpu_id) == (0, "2")


def test_visible_ids_follow_cuda_rules(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1b,5,oops,2")
    assert gpu_slots.visible_gpu_ids(4) == ["GPU-8a1b", "5"]  # CUDA stops at the first bad entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots.visible_gpu_ids(2) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_slots.visible_gpu_ids(3) == ["0", "1", "2"]


def test_a_waiting_job_says_so_and_gets_the_slot_when_it_frees(tmp_path, holders, capsys):
    holder = Holder(tmp_path, device_count=1)
    holders.append(holder)
    timer = threading.Timer(0.5, holder.close)
    timer.start()
    try:
        claim = claim_gpu(device_count=1, lock_dir=tmp_path, wait=True, timeout_s=60, poll_s=0.05)
    finally:
        timer.join()
    assert claim.index == 0 and holder.proc.returncode == 0
    claim.release()
    err = capsys.readouterr().err
    assert "all 1 GPU slots (1 GPUs x 1) are taken; waiting" in err and "claimed cuda:0" in err


def test_waiting_gives_up_after_its_timeout(tmp_path, holders):
    holders.append(Holder(tmp_path, device_count=1))
    with pytest.raises(NoFreeGpu):
        claim_gpu(device_count=1, lock_dir=tmp_path, timeout_s=0.2, poll_s=0.05)


def test_default_lock_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu_slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    with claim_gpu(device_count=1, wait=False) as claim:
        assert claim.path.parent == tmp_path / "locks"
        assert claim.path.read_text().split()[0] == str(os.getpid())
    monkeypatch.delenv(gpu_slots.LOCK_DIR_ENV)
    assert gpu_slots.default_lock_dir() == Path(f"/tmp/adamx-gpu-locks-{os.getuid()}")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_jobs_per_gpu_is_one_clear_sentence(tmp_path, bad):
    with pytest.raises(ValueError, match=r"trainer.jobs_per_gpu must be a whole number >= 1, got"):
        claim_gpu(jobs_per_gpu=bad, device_count=1, lock_dir=tmp_path)


def test_no_visible_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="No GPU is visible.*trainer.device=cpu"):
        claim_gpu(device_count=4, lock_dir=tmp_path)


def test_recommendation_from_peak_memory():
    gib = 2**30
    # 80 GiB GPU, 3 GiB peak + 1 GiB context: floor(0.8 * 80 / 4) = 16
    assert recommend_jobs_per_gpu(3 * gib, 80 * gib) == 16
    assert recommend_jobs_per_gpu(3.1 * gib, 80 * gib) == 15  # floor, never round up
    assert recommend_jobs_per_gpu(70 * gib, 80 * gib) == 1  # bigger than the headroom: still one job
    with pytest.raises(ValueError):
        recommend_jobs_per_gpu(gib, 0)


def test_recommendation_cli_reads_cuda_runs(tmp_path, capsys):
    gib = 2**30

    def summary(path, **fields):
        path.mkdir(parents=True)
        base = {"model": "swinv2_s", "device": "cuda:0 (NVIDIA H200)", "epochs_done": 1, "world_size": 1}
        (path / "summary.json").write_text(json.dumps({**base, **fields}))

    summary(tmp_path / "a", peak_memory_bytes=5 * gib)
    summary(tmp_path / "b", peak_memory_bytes=7 * gib)  # the larger peak of a model counts
    summary(tmp_path / "c", peak_memory_bytes=50 * gib, device="cpu")  # CPU runs say nothing about GPUs
    summary(tmp_path / "d", peak_memory_bytes=50 * gib, epochs_done=0)  # no finished epoch yet
    assert gpu_slots.measured_peaks(tmp_path) == {"swinv2_s": 7 * gib}
    assert gpu_slots.main([str(tmp_path), "--gpu-memory-gb", "141"]) == 0
    assert "swinv2_s" in (out := capsys.readouterr().out) and "trainer.jobs_per_gpu=14" in out
    assert gpu_slots.main([str(tmp_path / "a" / "none"), "--gpu-memory-gb", "80"]) == 2


def test_device_auto_claims_a_free_gpu_and_teardown_gives_it_back(tmp_path, holders, monkeypatch):
    """A stand-in CUDA machine with two GPUs, the first one taken by another job."""
    import torch

    from experiments.runs import devices

    monkeypatch.setenv(gpu_slots.LOCK_DIR_ENV, str(tmp_path))
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(gpu_slots, "_driver_uuid", lambda index: None)  # no driver: names from the indices
    real_claim = gpu_slots.claim_gpu
    monkeypatch.setattr(gpu_slots, "claim_gpu", lambda **kw: real_claim(**kw, wait=False))  # fail, never hang
    holders.append(Holder(tmp_path, device_count=2))  # another job holds GPU 0
    info = devices.setup("auto", jobs_per_gpu=1)
    assert info.device == torch.device("cuda", 1) and info.gpu_claim.held
    explicit = devices.setup("cuda:0")  # an explicit device wins: no claim
    assert explicit.device == torch.device("cuda", 0) and explicit.gpu_claim is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # under torchrun the rank's GPU wins
    ranked = devices.setup("auto", jobs_per_gpu=1)
    assert ranked.device == torch.device("cuda", 0) and ranked.gpu_claim is None
    devices.teardown(info)
    assert not info.gpu_claim.held
    with claim_gpu(device_count=2, lock_dir=tmp_path, wait=False) as again:
        assert again.index == 1  # given back: the next job gets it


def test_a_lock_dir_that_is_a_file_is_one_sentence(tmp_path, monkeypatch):
    """ADAMX_GPU_LOCK_DIR pointing at a file (or anything that cannot hold lock files): a UsageError
    naming the variable, not a FileExistsError traceback from mkdir."""
    from experiments.train.errors import UsageError

    not_a_dir = tmp_path / "locks"
    not_a_dir.write_text("")
    monkeypatch.setenv(gpu_slots.LOCK_DIR_ENV, str(not_a_dir))
    with pytest.raises(UsageError, match=rf"{not_a_dir} cannot hold lock files .*set ADAMX_GPU_LOCK_DIR"):
        claim_gpu(device_count=1, wait=False)
    with pytest.raises(UsageError, match="cannot hold lock files"):
        claim_gpu(device_count=1, lock_dir=not_a_dir / "below", wait=False)


@pytest.mark.parametrize("odd", ["[1, 2]", '"x"', "{not json", '{"model": "m", "device": "cuda:0", '
                                 '"epochs_done": 1, "peak_memory_bytes": "3a"}'])
def test_one_odd_summary_is_reported_and_the_rest_measured(tmp_path, capsys, odd):
    gib = 2**30
    good = tmp_path / "a"
    good.mkdir()
    good_summary = {"model": "swinv2_s", "device": "cuda:0", "epochs_done": 1, "peak_memory_bytes": 3 * gib}
    (good / "summary.json").write_text(json.dumps(good_summary))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(odd)
    unreadable = []
    assert gpu_slots.measured_peaks(tmp_path, unreadable) == {"swinv2_s": 3 * gib}
    assert len(unreadable) == 1 and unreadable[0].startswith(str(tmp_path / "b" / "summary.json"))
    assert gpu_slots.main([str(tmp_path), "--gpu-memory-gb", "80"]) == 0
    captured = capsys.readouterr()
    assert "swinv2_s" in captured.out and f"unreadable: {tmp_path / 'b' / 'summary.json'}" in captured.err


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_claiming_and_releasing_leaks_no_file_descriptor(tmp_path):
    """A sweep worker claims and releases a slot per run: 50 cycles leave as many open files as before."""
    claim_gpu(device_count=1, lock_dir=tmp_path, wait=False).release()  # imports and lazy opens done
    before = _open_fds()
    for _ in range(50):
        claim = claim_gpu(device_count=1, lock_dir=tmp_path, wait=False)
        claim.release()
        assert not claim.held
    assert _open_fds() == before


def test_the_lock_file_names_only_the_current_holder(tmp_path):
    """A longer note left by an earlier holder is replaced whole, not overwritten in part."""
    (tmp_path / "gpu-0.slot0.lock").write_text("99999999 an-earlier-and-much-longer-host-name.example 2020\n" * 3)
    with claim_gpu(device_count=1, lock_dir=tmp_path, wait=False) as claim:
        text = claim.path.read_text()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    pid, host, when = text.split(" ")
    assert (int(pid), host) == (os.getpid(), socket.gethostname())
    assert len(when) == len("2024-01-31T12:00:00\n")


def test_recommendation_edges():
    """A peak of 0 bytes (a run that kept nothing on the GPU) is valid: the context alone sets the count; a
    total of 1 byte is positive: one job."""
    assert recommend_jobs_per_gpu(0, 80 * 2**30) == 64  # floor(0.8 * 80 GiB / 1 GiB of context)
    assert recommend_jobs_per_gpu(0, 1) == 1
    with pytest.raises(ValueError, match="got -1 and"):
        recommend_jobs_per_gpu(-1, 80 * 2**30)


def test_recommendation_cli_without_a_gpu_asks_for_its_memory(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_slots.main([str(tmp_path)]) == 2
    assert "pass --gpu-memory-gb" in capsys.readouterr().err
