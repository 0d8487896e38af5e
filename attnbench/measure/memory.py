"""Peak memory of one call beyond its inputs, read in a fresh worker process.

On CPU it is the resident-set high-water mark of the measured region: reset with ``/proc/self/clear_refs``,
read ``VmHWM``, minus the resident size with the inputs already allocated. :class:`RssMeter` is the same
reading for any block of code (the ``benchmarks/`` scripts use it).
"""

from __future__ import annotations

import ctypes
import gc
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnbench.measure.cells import MemoryCell, MemoryReading
from attnbench.measure.workload import build_workload

# glibc: allocations of at least this many bytes use mmap and go back to the OS when freed, so the
# resident set tracks live buffers (the effect of MALLOC_MMAP_THRESHOLD_=65536 at process start)
MMAP_THRESHOLD_BYTES = 65536
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
SMALL_WARMUP_SEQ = 128


def status_bytes(key: str) -> int:
    """A ``/proc/self/status`` figure (``"VmRSS:"``, ``"VmHWM:"``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def fix_mmap_threshold() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return ok and libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssMeter:
    """Resident-set growth of a block: ``with RssMeter() as m: ...`` then ``m.peak_bytes`` (CPU, Linux)."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.method = "VmHWM after clear_refs"
        self._baseline = 0
        self._exact = False

    def __enter__(self) -> RssMeter:
        gc.collect()
        self._exact = reset_high_water_mark()
        self._baseline = status_bytes("VmRSS:")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._exact:
            high = status_bytes("VmHWM:")
        else:
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss"
        self.peak_bytes = max(0, high - self._baseline)


def memory_cell(job: MemoryCell, report: Callable[[dict[str, Any]], None] | None = None) -> MemoryReading:
    cell = job.cell
    torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    notes = []
    if device.type == "cpu" and not fix_mmap_threshold():
        notes.append("mallopt unavailable: freed buffers may stay resident and hide part of the peak")
    fn = build_workload(cell)
    if job.warmup_full:
        fn()  # at the measured shape: kernels, compiled graphs and caches for it are built before the reading
    else:
        build_workload(cell, seq_len=min(cell.seq_len, SMALL_WARMUP_SEQ))()  # lazy state only: a call is slow
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn()
        peak = torch.cuda.max_memory_allocated(device) - baseline
        return MemoryReading(int(peak), "cuda max_memory_allocated", tuple(notes))
    with RssMeter() as meter:
        fn()
    if meter.method == "ru_maxrss":
        notes.append("/proc/self/clear_refs not writable: peak from ru_maxrss of a fresh worker (an upper bound)")
    return MemoryReading(meter.peak_bytes, meter.method, tuple(notes))
