"""The machine's matmul peak: the ceiling each cell's throughput is read against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import benchmark

from attnbench.measure.cells import PeakCell
from attnbench.measure.workload import DTYPES, synchronize


def matmul_peak_gflops(cell: PeakCell, report: Callable[[dict[str, Any]], None] | None = None) -> float:
    """Best achieved GFLOP/s of a large square matmul."""
    torch.set_num_threads(cell.threads)
    dev = torch.device(cell.device)
    a = torch.randn(cell.size, cell.size, device=dev, dtype=DTYPES[cell.dtype])
    b = torch.randn(cell.size, cell.size, device=dev, dtype=DTYPES[cell.dtype])

    def matmul() -> None:
        torch.mm(a, b)
        synchronize(dev)

    matmul()
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": matmul}, num_threads=cell.threads).blocked_autorange(
        min_run_time=0.5
    )
    return 2 * cell.size**3 / min(measurement.times) / 1e9


BANDWIDTH_BYTES = 256 * 2**20  # far beyond any cache, so the copy streams from and to DRAM


def memory_bandwidth_gbs(cell: PeakCell, report: Callable[[dict[str, Any]], None] | None = None) -> float:
    """Best achieved GB/s of a large tensor copy (bytes read plus bytes written), STREAM's "copy"."""
    torch.set_num_threads(cell.threads)
    dev = torch.device(cell.device)
    source = torch.ones(BANDWIDTH_BYTES // 4, device=dev)
    target = torch.empty_like(source)  # written once here, so the timed copies touch no fresh pages

    def copy() -> None:
        target.copy_(source)
        synchronize(dev)

    copy()
    # a copy takes tens of ms, so 0.2 s is already several of them: the best is what is kept
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": copy}, num_threads=cell.threads).blocked_autorange(
        min_run_time=0.2
    )
    return 2 * BANDWIDTH_BYTES / min(measurement.times) / 1e9

