"""Time one cell: the first call apart, then the steady state's median, IQR and every raw per-run time.

``torch.utils.benchmark.Timer`` with an explicit ``num_threads`` and adaptive autorange; the first call is
timed on its own because it includes lazy initialisation and any ``torch.compile``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import benchmark

from attnbench.measure.cells import CellSpec, Timing
from attnbench.measure.workload import build_workload

SLOW_CALL_S = 0.25  # a call slower than this is timed a few times one by one instead of by autorange
VERY_SLOW_CALL_S = 1.0  # ... one slower than this only twice
GLACIAL_CALL_S = 4.0  # ... and one slower than this once more (its first call already took that long)


def time_cell(cell: CellSpec, report: Callable[[dict[str, Any]], None] | None = None) -> Timing:
    torch.set_num_threads(cell.threads)
    fn = build_workload(cell)
    start = time.perf_counter()
    fn()
    first_call = time.perf_counter() - start
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=cell.threads)
    if first_call >= SLOW_CALL_S:
        # autorange would need many seconds per block: a few single runs, as many as the budget allows
        remaining = cell.time_budget_s - 2 * first_call
        most = 1 if first_call >= GLACIAL_CALL_S else 2 if first_call >= VERY_SLOW_CALL_S else 3
        repeats = int(max(1, min(most, remaining // max(first_call, 1e-9))))
        blocks = [float(timer.timeit(number=1).times[0]) for _ in range(repeats)]
        runs_per_block = 1
    else:
        fn()  # one more warm-up: allocator and kernel caches settle after the first call
        measurement = timer.adaptive_autorange(
            threshold=0.1, min_run_time=cell.min_run_time, max_run_time=cell.max_run_time
        )
        blocks = [float(t) for t in measurement.times]
        runs_per_block = int(measurement.number_per_run)
    return Timing(
        first_call_s=first_call,
        time_median_s=statistics.median(blocks),
        time_iqr_s=iqr(blocks),
        raw_times_s=tuple(blocks),
        runs_per_block=runs_per_block,
    )


def iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1
