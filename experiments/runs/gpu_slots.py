"""One job per GPU in a parallel sweep: each job claims a free (GPU, slot) with an OS-level file lock.

A claim is ``fcntl.flock`` on ``<lock_dir>/<gpu id>.slot<k>.lock``. The kernel drops the lock when the
holder exits, however it dies (``kill -9`` included), so a crashed job never keeps its GPU. Slot indices
are positions in the visible list (``cuda:<index>``, honouring ``CUDA_VISIBLE_DEVICES``); lock files are
named by the physical GPU (its UUID when the driver is asked, else the ``CUDA_VISIBLE_DEVICES`` entry), so
two sweeps that see the GPUs in different orders still never share a slot.

``python -m experiments.runs.gpu_slots RUNS_ROOT`` prints a measured ``jobs_per_gpu`` per model from the peak
memory that finished CUDA runs recorded in their summary.json (``recommend_jobs_per_gpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.train.errors import UsageError, one_line

if TYPE_CHECKING:
    import torch

LOCK_DIR_ENV = "ADAMX_GPU_LOCK_DIR"
POLL_S = 2.0  # seconds between tries while every slot is taken
CUDA_CONTEXT_BYTES = 1 << 30  # what a process holds on a GPU beyond its tensors (context, cuBLAS workspace)
HEADROOM = 0.8  # fraction of a GPU's memory the recommendation plans to fill


def default_lock_dir() -> Path:
    """``$ADAMX_GPU_LOCK_DIR``, else one directory per user under /tmp (shared by all of that user's sweeps)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/adamx-gpu-locks-{os.getuid()}")


def _ids_from_env(device_count: int) -> list[str]:
    """The first ``device_count`` entries of CUDA_VISIBLE_DEVICES (CUDA stops at the first bad entry)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [str(k) for k in range(device_count)]
    ids = []
    for entry in value.split(","):
        entry = entry.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        ids.append(entry)
    return ids[:device_count]


def _driver_uuid(index: int) -> str | None:
    import torch

    try:
        return f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:  # older torch, or a driver that will not say
        return None


def visible_gpu_ids(device_count: int | None = None) -> list[str]:
    """A physical name for each visible GPU, in ``cuda:<k>`` order.

    With ``device_count`` given (tests, or a caller that already knows) the names come from
    CUDA_VISIBLE_DEVICES; otherwise CUDA is asked for the count and each device's UUID.
    """
    if device_count is not None:
        return _ids_from_env(device_count)
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    fallback = _ids_from_env(count)
    return [_driver_uuid(k) or (fallback[k] if k < len(fallback) else str(k)) for k in range(count)]


def _file_name(gpu_id: str, slot: int) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"gpu-{gpu_id}") + f".slot{slot}.lock"


class GpuClaim:
    """A held (GPU, slot): ``device`` to train on, ``release()`` (or leave the ``with`` block) when done."""

    def __init__(self, index: int, gpu_id: str, slot: int, path: Path, fd: int) -> None:
        self.index, self.gpu_id, self.slot, self.path = index, gpu_id, slot, path
        self._fd: int | None = fd

    @property
    def device(self) -> torch.device:
        import torch  # here, so that claiming a slot does not pay for importing torch

        return torch.device("cuda", self.index)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the slot back (idempotent). The lock file stays: deleting it would race with a new claimant."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> GpuClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the kernel frees the lock anyway
            self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"GpuClaim({self.device}, gpu {self.gpu_id}, slot {self.slot}, {state})"


class NoFreeGpu(RuntimeError):
    """Every (GPU, slot) is taken and the caller asked not to wait (or waited past its timeout)."""


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)  # who holds it, for a human looking at the lock directory
    os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    return fd


def try_claim(gpu_ids: Sequence[str], jobs_per_gpu: int, lock_dir: Path) -> GpuClaim | None:
    """One pass over the slots: first slot 0 of every GPU, then slot 1, ... (spread before doubling up).

    A lock directory that cannot hold lock files (a file, read-only, no permission) is a UsageError."""
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        for slot in range(jobs_per_gpu):
            for index, gpu_id in enumerate(gpu_ids):
                path = lock_dir / _file_name(gpu_id, slot)
                fd = _try_lock(path)
                if fd is not None:
                    return GpuClaim(index, gpu_id, slot, path, fd)
    except OSError as error:
        raise UsageError(
            f"The GPU slot lock directory {lock_dir} cannot hold lock files ({one_line(error)}); set "
            f"{LOCK_DIR_ENV} to a writable directory, or unset it to use /tmp."
        ) from error
    return None


def claim_gpu(
    jobs_per_gpu: int = 1,
    device_count: int | None = None,
    lock_dir: Path | str | None = None,
    wait: bool = True,
    timeout_s: float | None = None,
    poll_s: float = POLL_S,
) -> GpuClaim:
    """Claim a free (GPU, slot) among the visible GPUs; wait (saying so once) while all are taken.

    ``device_count`` overrides CUDA's count (tests use it without a GPU). Raises ``NoFreeGpu`` when
    ``wait`` is false or ``timeout_s`` passes, and ``ValueError`` on a bad setting or no visible GPU.
    """
    if not isinstance(jobs_per_gpu, int) or isinstance(jobs_per_gpu, bool) or jobs_per_gpu < 1:
        raise UsageError(f"trainer.jobs_per_gpu must be a whole number >= 1, got {jobs_per_gpu!r}.")
    gpu_ids = visible_gpu_ids(device_count)
    if not gpu_ids:
        raise UsageError(
            "No GPU is visible to claim (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use trainer.device=cpu or make a GPU visible."
        )
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    start = time.monotonic()
    said = False
    while True:
        claim = try_claim(gpu_ids, jobs_per_gpu, directory)
        if claim is not None:
            if said:
                print(
                    f"claimed {claim.device} (gpu {claim.gpu_id}, slot {claim.slot})",
                    file=sys.stderr,
                    flush=True,
                )
            return claim
        total = len(gpu_ids) * jobs_per_gpu
        if not wait or (timeout_s is not None and time.monotonic() - start >= timeout_s):
            raise NoFreeGpu(
                f"All {total} GPU slots ({len(gpu_ids)} GPUs x jobs_per_gpu={jobs_per_gpu}) are taken "
                f"(locks in {directory}); run fewer jobs at once or raise trainer.jobs_per_gpu."
            )
        if not said:
            print(
                f"all {total} GPU slots ({len(gpu_ids)} GPUs x {jobs_per_gpu}) are taken; waiting for one "
                f"to free up (locks in {directory})",
                file=sys.stderr,
                flush=True,
            )
            said = True
        time.sleep(poll_s)


# ---------------------------------------------------------------------- measured jobs_per_gpu


def recommend_jobs_per_gpu(peak_bytes: float, total_bytes: float, headroom: float = HEADROOM) -> int:
    """How many runs of this peak memory fit on one GPU: floor(headroom * total / (peak + context)), >= 1."""
    if peak_bytes < 0 or total_bytes <= 0:
        raise ValueError(f"peak and total memory must be positive, got {peak_bytes} and {total_bytes}.")
    return max(1, math.floor(headroom * total_bytes / (peak_bytes + CUDA_CONTEXT_BYTES)))


def measured_peaks(runs_root: Path, unreadable: list[str] | None = None) -> dict[str, int]:
    """The largest ``peak_memory_bytes`` per model over the CUDA runs under ``runs_root`` that got an epoch
    done. A summary.json that is not a JSON object with numbers where numbers belong is skipped (its path
    and why appended to ``unreadable`` when given): one odd file must not hide the others."""
    peaks: dict[str, int] = {}
    for path in sorted(Path(runs_root).rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict):
                raise ValueError(f"it holds a JSON {type(summary).__name__}, not an object")
            if not str(summary.get("device", "")).startswith("cuda") or not summary.get("epochs_done"):
                continue
            if summary.get("world_size", 1) != 1 or summary.get("peak_memory_bytes") is None:
                continue
            peak = int(summary["peak_memory_bytes"])
        except (OSError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
            if unreadable is not None:
                unreadable.append(f"{path} ({one_line(error)})")
            continue
        model = str(summary.get("model"))
        peaks[model] = max(peaks.get(model, 0), peak)
    return peaks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_root", type=Path, help="runs root holding finished CUDA runs")
    parser.add_argument("--gpu-memory-gb", type=float, help="memory of the target GPU (default: cuda:0's)")
    args = parser.parse_args(argv)
    import torch

    if args.gpu_memory_gb is not None:
        total = args.gpu_memory_gb * 2**30
    elif torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
    else:
        print("error: no GPU here to measure; pass --gpu-memory-gb for the target GPU.", file=sys.stderr)
        return 2
    unreadable: list[str] = []
    peaks = measured_peaks(args.runs_root, unreadable)
    for line in unreadable:
        print(f"unreadable: {line}", file=sys.stderr)
    if not peaks:
        print(
            f"error: no CUDA run with a finished epoch under {args.runs_root}; run one first.",
            file=sys.stderr,
        )
        return 2
    print(f"GPU memory {total / 2**30:.1f} GiB, planning {HEADROOM:.0%} of it")
    for model, peak in sorted(peaks.items()):
        jobs = recommend_jobs_per_gpu(peak, total)
        print(f"{model:20s} peak {peak / 2**30:6.2f} GiB -> trainer.jobs_per_gpu={jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
