"""Whether the CPU was the worker's during a timing block: run-queue delay, CPU pressure and CPU time.

CPU time alone misleads: OpenMP threads spin while they wait at a barrier, so a starved worker can still
read ~100% busy. The run-queue delay (``/proc/self/task/*/schedstat``, second field: nanoseconds a thread
sat runnable without a CPU) says directly how long the worker's threads waited for one; the system's CPU
pressure (``/proc/pressure/cpu``, ``some`` total in microseconds) is the fallback where schedstat is
missing. Either file may be absent (another OS, a container without PSI): the reading is then ``None``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

_TASKS = Path("/proc/self/task")
_PRESSURE = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class Snapshot:
    wall_s: float
    cpu_s: float  # this process's CPU time, every thread
    run_delay_s: float | None  # summed over this process's threads
    pressure_s: float | None  # the system's cumulative "some" CPU pressure


@dataclass(frozen=True)
class BlockEvidence:
    """One timing block: its wall time and what happened to the CPU meanwhile (differences of snapshots)."""

    wall_s: float
    cpu_s: float
    run_delay_s: float | None
    pressure_s: float | None


def run_delay_s() -> float | None:
    total, seen = 0, False
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended between the listing and the read
        if len(fields) >= 2:
            total += int(fields[1])
            seen = True
    return total / 1e9 if seen else None


def pressure_s() -> float | None:
    try:
        for line in _PRESSURE.read_text().splitlines():
            if line.startswith("some"):
                for part in line.split():
                    if part.startswith("total="):
                        return int(part[len("total=") :]) / 1e6
    except (OSError, ValueError):
        return None
    return None


def snapshot() -> Snapshot:
    return Snapshot(time.perf_counter(), time.process_time(), run_delay_s(), pressure_s())


def between(start: Snapshot, end: Snapshot) -> BlockEvidence:
    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)

    return BlockEvidence(
        wall_s=end.wall_s - start.wall_s,
        cpu_s=end.cpu_s - start.cpu_s,
        run_delay_s=delta(start.run_delay_s, end.run_delay_s),
        pressure_s=delta(start.pressure_s, end.pressure_s),
    )


def wait_fraction(blocks: tuple[BlockEvidence, ...] | list[BlockEvidence], threads: int) -> float | None:
    """Share of the worker's thread-time spent waiting for a CPU: run delay / (wall × threads).

    Falls back to the system's CPU pressure (share of wall time some task waited) without schedstat;
    ``None`` when neither was readable.
    """
    wall = sum(b.wall_s for b in blocks)
    if wall <= 0:
        return None
    delays = [b.run_delay_s for b in blocks]
    if delays and all(d is not None for d in delays):
        return sum(d for d in delays if d is not None) / (wall * max(1, threads))
    pressures = [b.pressure_s for b in blocks]
    if pressures and all(p is not None for p in pressures):
        return sum(p for p in pressures if p is not None) / wall
    return None


def iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def spread(values: list[float]) -> float:
    """IQR / median: the robust spread of a cell's blocks (``time_cv``)."""
    middle = statistics.median(values) if values else 0.0
    return iqr(values) / middle if middle > 0 else 0.0
