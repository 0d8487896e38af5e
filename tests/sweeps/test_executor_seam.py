"""The sweeps consume outcomes from any executor: a scripted one (no processes) drives them here."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attnbench.execution.protocol import Event, Outcome, Progress
from attnbench.measure.cells import CellSpec, MemoryCell, MemoryReading, Timing
from attnbench.measure.memory import memory_cell
from attnbench.measure.timing import time_cell
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import COMPLEXITY_COLUMNS, COMPLEXITY_CSV, COMPLEXITY_RAW_COLUMNS, COMPLEXITY_RAW_CSV
from attnbench.sweeps.complexity import ComplexityConfig, run_sweep
from attnbench.sweeps.events import CellFinished, PhaseStarted, SweepEvent


class ScriptedExecutor:
    """Answers each cell from ``script(fn, cell)`` at once; records what it was handed."""

    capacity = 1

    def __init__(self, script: Callable[[Callable[..., Any], Any], Outcome]) -> None:
        self.script = script
        self.submitted: list[tuple[Callable[..., Any], Any]] = []
        self._queue: deque[tuple[Callable[..., Any], Any, Any]] = deque()

    def submit(
        self, fn: Callable[..., Any], cell: Any, *, timeout_s: float | None, tag: Any = None, node: str | None = None
    ) -> None:
        self.submitted.append((fn, cell))
        self._queue.append((fn, cell, tag))

    def nodes(self) -> list[str]:
        return ["scripted"]

    def outcomes(self) -> Iterator[Event]:
        while self._queue:
            fn, cell, tag = self._queue.popleft()
            yield Progress({"note": "running"}, tag)
            outcome = self.script(fn, cell)
            yield Outcome(outcome.status, outcome.result, outcome.message, 0.0, tag)

    def cancel(self) -> None:
        self._queue.clear()


def _timing(median: float) -> Timing:
    return Timing(first_call_s=median, time_median_s=median, time_iqr_s=0.0, raw_times_s=(median, median),
                  runs_per_block=5)  # fmt: skip


def _config(**kwargs: Any) -> ComplexityConfig:
    values = {"variants": ["softmax", "linear"], "seq_lens": [32, 64, 128], "passes": ["fwd"], "heads": 2,
              "head_dim": 8} | kwargs  # fmt: skip
    return ComplexityConfig(**values)


def test_statuses_skips_after_a_failure_and_raw_times_come_from_outcomes(tmp_path: Path) -> None:
    def script(fn: Callable[..., Any], cell: Any) -> Outcome:
        if fn is time_cell:
            if cell.spec == "linear" and cell.seq_len == 64:
                return Outcome("oom", None, "scripted oom")
            return Outcome("ok", _timing(cell.seq_len * 1e-6))
        assert fn is memory_cell and isinstance(cell, MemoryCell)
        assert cell.warmup_full  # a fast call: the memory worker warms up at full size
        return Outcome("ok", MemoryReading(cell.cell.seq_len * 1000, "scripted"))

    run_dir = RunDir.create("complexity", out=tmp_path / "run")
    events: list[SweepEvent] = []
    executor = ScriptedExecutor(script)
    ran = run_sweep(_config(), run_dir, executor, machine_peak_gflops=None, on_event=events.append)
    rows = run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS).set_index(["spec", "seq_len"])
    assert ran == 6
    assert rows.loc[("softmax", 128), "status"] == "ok" and rows.loc[("softmax", 128), "peak_mem_bytes"] == 128_000
    assert rows.loc[("linear", 64), "status"] == "oom" and rows.loc[("linear", 64), "message"] == "scripted oom"
    assert rows.loc[("linear", 128), "message"] == "skipped: oom at n=64"
    assert all(isinstance(c, CellSpec) for fn, c in executor.submitted if fn is time_cell)
    assert not any(c.spec == "linear" and c.seq_len == 128 for _, c in executor.submitted if isinstance(c, CellSpec))
    raw = run_dir.rows(COMPLEXITY_RAW_CSV, COMPLEXITY_RAW_COLUMNS)
    assert len(raw) == 2 * 4  # two blocks for each of the four ok cells
    assert isinstance(events[0], PhaseStarted) and events[0].total == 6
    assert sum(isinstance(e, CellFinished) for e in events) == 6


def test_max_cells_stops_early_and_a_second_sweep_runs_only_the_rest(tmp_path: Path) -> None:
    def script(fn: Callable[..., Any], cell: Any) -> Outcome:
        return Outcome("ok", _timing(1e-4) if fn is time_cell else MemoryReading(1, "scripted"))

    run_dir = RunDir.create("complexity", out=tmp_path / "run")
    assert run_sweep(_config(), run_dir, ScriptedExecutor(script), machine_peak_gflops=None, max_cells=4) == 4
    assert run_dir.stopped_early
    again = ScriptedExecutor(script)
    assert run_sweep(_config(), run_dir, again, machine_peak_gflops=None) == 2
    assert {c.seq_len for _, c in again.submitted if isinstance(c, CellSpec)} == {128}
