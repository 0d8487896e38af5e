"""Time one cell: the first call apart, then the steady state's median, IQR and every raw per-run time.

``torch.utils.benchmark.Timer`` with an explicit ``num_threads``, in blocks of a calibrated number of runs
until the blocks agree (or the run-time cap); the first call is timed on its own because it includes lazy
initialisation and any ``torch.compile``. Each block carries its evidence (:mod:`attnbench.measure.evidence`):
wall and CPU time, the worker's run-queue delay and the system's CPU pressure over the block.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import benchmark

from attnbench.measure.cells import CellSpec, Timing
from attnbench.measure.evidence import BlockEvidence, between, iqr, snapshot, spread
from attnbench.measure.workload import build_workload

SLOW_CALL_S = 0.25  # a call slower than this is timed a few times one by one instead of by autorange
VERY_SLOW_CALL_S = 1.0  # ... one slower than this only twice
GLACIAL_CALL_S = 4.0  # ... and one slower than this once more (its first call already took that long)
BLOCKS_PER_MIN_RUN = 5  # a block lasts about min_run_time / 5
MIN_BLOCKS = 5  # blocks before the spread can be judged settled
MIN_BLOCKS_CAPPED = 3  # blocks at least, even past max_run_time
SETTLED_SPREAD = 0.1  # IQR / median under which more blocks would not move the median


def time_cell(cell: CellSpec, report: Callable[[dict[str, Any]], None] | None = None) -> Timing:
    torch.set_num_threads(cell.threads)
    fn = build_workload(cell)
    start = time.perf_counter()
    fn()
    first_call = time.perf_counter() - start
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=cell.threads)
    blocks: list[float] = []
    evidence: list[BlockEvidence] = []

    def block(number: int) -> float:
        before = snapshot()
        per_run = _timeit(timer, number) / number
        evidence.append(between(before, snapshot()))
        blocks.append(per_run)
        return per_run

    if first_call >= SLOW_CALL_S:
        # a block of many runs would take seconds: a few single runs, as many as the budget allows
        remaining = cell.time_budget_s - 2 * first_call
        most = 1 if first_call >= GLACIAL_CALL_S else 2 if first_call >= VERY_SLOW_CALL_S else 3
        repeats = int(max(1, min(most, remaining // max(first_call, 1e-9))))
        for _ in range(repeats):
            block(1)
        runs_per_block = 1
    else:
        fn()  # one more warm-up: allocator and kernel caches settle after the first call
        runs_per_block = _runs_per_block(timer, cell.min_run_time)
        spent = 0.0
        while True:
            spent += block(runs_per_block) * runs_per_block
            enough = len(blocks) >= MIN_BLOCKS and spent >= cell.min_run_time and spread(blocks) <= SETTLED_SPREAD
            if enough or (spent >= cell.max_run_time and len(blocks) >= MIN_BLOCKS_CAPPED):
                break
    return Timing(
        first_call_s=first_call,
        time_median_s=statistics.median(blocks),
        time_iqr_s=iqr(blocks),
        raw_times_s=tuple(blocks),
        runs_per_block=runs_per_block,
        blocks=tuple(evidence),
    )


def _runs_per_block(timer: benchmark.Timer, min_run_time: float) -> int:
    """Enough runs that one block lasts about a fifth of ``min_run_time`` (clock resolution is then moot)."""
    target = max(min_run_time / BLOCKS_PER_MIN_RUN, 1e-3)
    number = 1
    while True:
        elapsed = _timeit(timer, number)
        if elapsed >= target or number >= 1_000_000:
            return number
        number = min(1_000_000, max(number * 2, int(number * target / max(elapsed, 1e-9) * 1.1)))


def _timeit(timer: benchmark.Timer, number: int) -> float:
    """Seconds for ``number`` back-to-back runs. ``Timer.timeit`` would add max(number/100, 2) warm-up runs to
    every block (tripling a block of one slow call); its autorange loops time blocks with ``_timeit`` as here."""
    return float(timer._timeit(number))
