"""The scaling sweep: each variant × sequence length × pass, timed and metered in worker processes.

Cells run length by length (every variant at n before any at 2n), so an interrupted run already covers
every variant at the smaller lengths. A variant that fails (oom, timeout, error) at n is skipped at larger
n; a cell whose predicted peak exceeds the memory budget is recorded ``skipped`` without running.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.execution.protocol import Executor, Outcome, Progress, run_one
from attnbench.measure.approximation import approximation_cell
from attnbench.measure.cells import CellSpec, MemoryCell, PeakCell, Timing
from attnbench.measure.cost import VariantCodeError, cell_cost, cell_flops, guarded, input_bytes, predicted_peak
from attnbench.measure.memory import memory_cell
from attnbench.measure.peak import matmul_peak_gflops
from attnbench.measure.timing import time_cell
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import (
    APPROXIMATION_COLUMNS,
    APPROXIMATION_CSV,
    COMPLEXITY_COLUMNS,
    COMPLEXITY_CSV,
    COMPLEXITY_RAW_COLUMNS,
    COMPLEXITY_RAW_CSV,
    FAILED,
)
from attnbench.sweeps.complexity_config import ComplexityConfig, default_variants
from attnbench.sweeps.events import CellFinished, CellStarted, OnEvent, PhaseStarted, ignore

__all__ = [
    "ComplexityConfig", "cell_flops", "complexity_job", "default_variants", "input_bytes", "plan_cells",
    "predicted_peak", "run_approximation", "run_sweep",
]  # fmt: skip

FULL_WARMUP_BELOW_S = 0.25  # warming the memory worker up at full size costs one more call: worth it below this
APPROXIMATION_MAX_SEQ_LEN = 8192  # the error is measured up to here: beyond, it costs more than it tells
MACHINE_PEAK_TIMEOUT_S = 120.0


def plan_cells(config: ComplexityConfig) -> list[CellSpec]:
    return [
        CellSpec(
            spec=spec, scope=scope, pass_=pass_, batch=config.batch, heads=config.heads,
            head_dim=config.head_dim, seq_len=n, causal=config.causal, dtype=config.dtype, device=config.device,
            threads=config.threads, compile=config.compile, plugins=tuple(config.plugins), seed=config.seed,
            min_run_time=config.min_run_time, max_run_time=config.max_run_time, time_budget_s=config.time_budget_s,
        )
        for n in config.seq_lens
        for scope in config.scopes
        for spec in config.variants
        for pass_ in config.passes
    ]


Key = tuple[str, str, str, int]


def cell_key(row: dict[str, Any] | pd.Series) -> Key:
    return (str(row["spec"]), str(row["scope"]), str(row["pass"]), int(row["seq_len"]))


def _key(cell: CellSpec) -> Key:
    return (cell.spec, cell.scope, cell.pass_, cell.seq_len)


def label(cell: CellSpec) -> str:
    return f"{cell.spec} {cell.scope} {cell.pass_} n={cell.seq_len}"


class _Variants:
    """Each variant's spec parsed once per sweep: its name, family and class."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str, type]] = {}

    def __call__(self, spec: str) -> tuple[str, str, type]:
        if spec not in self._seen:
            name = parse_attention_spec(spec).name
            cls = attention_class(name)
            self._seen[spec] = (name, cls.family, cls)
        return self._seen[spec]


def _base_row(cell: CellSpec, name: str, family: str) -> dict[str, Any]:
    return {
        "spec": cell.spec, "variant": name, "family": family, "scope": cell.scope,
        "pass": cell.pass_, "device": cell.device, "dtype": cell.dtype, "threads": cell.threads,
        "batch": cell.batch, "heads": cell.heads, "head_dim": cell.head_dim, "seq_len": cell.seq_len,
        "causal": cell.causal,
    }  # fmt: skip


@dataclass(frozen=True)
class _InFlight:
    """A measured cell between its outcomes: its row so far and, once timed, its timing."""

    cell: CellSpec
    row: dict[str, Any]
    timing: Timing | None = None


def _skip_message(cell: CellSpec, cls: type, row: dict[str, Any], budget: int, earlier: str | None) -> str | None:
    unsupported = guarded(
        f"{cell.spec}: unsupported_reason()",
        lambda: cls.unsupported_reason(device=cell.device, backward=cell.backward, causal=cell.causal),
    )
    if unsupported is not None:
        return f"not supported here: {unsupported}"
    if earlier is not None:
        return earlier
    predicted = row["predicted_peak_bytes"]
    if predicted is not None and budget and predicted + input_bytes(cell) > budget:
        return (
            f"predicted peak {predicted / 2**20:.0f} MiB + inputs exceeds the memory budget {budget / 2**20:.0f} MiB"
        )
    return None


def _measured_row(job: _InFlight, memory: Outcome, machine_peak_gflops: float | None) -> dict[str, Any]:
    t = job.timing
    assert t is not None
    row = job.row | {
        "time_median_s": t.time_median_s,
        "time_iqr_s": t.time_iqr_s,
        "first_call_s": t.first_call_s,
        "gflops_per_s": row_flops(job.row) / t.time_median_s / 1e9 if t.time_median_s > 0 else None,
    }
    if machine_peak_gflops and row["gflops_per_s"] is not None:
        row["peak_fraction"] = row["gflops_per_s"] / machine_peak_gflops
    notes: list[str] = []
    if memory.status == "ok":
        row["peak_mem_bytes"] = memory.result.peak_mem_bytes
        notes += memory.result.notes
        status = "ok"
    else:
        status = memory.status
        notes.append(f"memory worker: {memory.message}")
    return row | {"status": status, "message": "; ".join(notes)}


def row_flops(row: dict[str, Any]) -> int:
    return int(row["flops"])


def raw_rows(row: dict[str, Any], timing: Timing | None) -> Iterator[dict[str, Any]]:
    if timing is None or row["status"] != "ok":
        return
    keys = ("spec", "scope", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len", "causal")
    base = {k: row[k] for k in keys}
    for i, t in enumerate(timing.raw_times_s):
        yield base | {"block": i, "runs_per_block": timing.runs_per_block, "time_s": t}


def run_sweep(
    config: ComplexityConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    machine_peak_gflops: float | None,
    on_event: OnEvent = ignore,
    max_cells: int | None = None,
) -> int:
    """Run every cell not yet in ``complexity.csv``; returns how many ran. Rows are appended as they finish."""
    done_rows = run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
    done = {cell_key(r) for _, r in done_rows.iterrows()}
    failed_at: dict[tuple[str, str, str], tuple[int, str]] = {}
    for _, r in done_rows.sort_values("seq_len").iterrows():
        if r["status"] in FAILED:
            failed_at.setdefault((r["spec"], r["scope"], r["pass"]), (int(r["seq_len"]), str(r["status"])))
    run_dir.drop_orphan_rows(COMPLEXITY_RAW_CSV, main=COMPLEXITY_CSV, key=("spec", "scope", "pass", "seq_len"))
    out = run_dir.appender(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
    raw = run_dir.appender(COMPLEXITY_RAW_CSV, COMPLEXITY_RAW_COLUMNS)
    todo = deque(c for c in plan_cells(config) if _key(c) not in done)
    on_event(PhaseStarted("complexity", len(todo) if max_cells is None else min(len(todo), max_cells)))
    variants = _Variants()
    started = in_flight = 0

    def finish(cell: CellSpec, row: dict[str, Any], timing: Timing | None) -> None:
        raw.extend(raw_rows(row, timing))
        out.append(row)  # last: a row present means its raw times are complete
        if row["status"] in FAILED:
            failed_at.setdefault(_key(cell)[:3], (cell.seq_len, row["status"]))
        on_event(CellFinished(label(cell), row))

    def feed() -> None:
        nonlocal started, in_flight
        while in_flight < executor.capacity and todo:
            if max_cells is not None and started >= max_cells:
                run_dir.stopped_early = True
                todo.clear()
                return
            cell = todo.popleft()
            started += 1
            on_event(CellStarted(label(cell)))
            name, family, cls = variants(cell.spec)
            row = _base_row(cell, name, family)
            earlier = failed_at.get(_key(cell)[:3])
            after_failure = f"skipped: {earlier[1]} at n={earlier[0]}" if earlier else None
            try:  # the variant's own code runs here, in the parent: its failure is this cell's error row
                cost = cell_cost(cell)
                row |= {"predicted_peak_bytes": cost.predicted_peak_bytes, "flops": cost.flops}
                skip = _skip_message(cell, cls, row, config.memory_budget_bytes, after_failure)
            except VariantCodeError as err:
                finish(cell, row | {"status": "error", "message": f"in the parent: {err}"}, None)
                continue
            if skip is not None:
                finish(cell, row | {"status": "skipped", "message": skip}, None)
                continue
            executor.submit(time_cell, cell, timeout_s=cell.time_budget_s, tag=_InFlight(cell, row))
            in_flight += 1

    feed()
    for event in executor.outcomes():
        if isinstance(event, Progress):
            continue
        job: _InFlight = event.tag
        if job.timing is None and event.status == "ok":
            warmup_full = event.result.time_median_s < FULL_WARMUP_BELOW_S
            executor.submit(
                memory_cell, MemoryCell(job.cell, warmup_full=warmup_full), timeout_s=job.cell.time_budget_s,
                tag=_InFlight(job.cell, job.row, event.result),
            )  # fmt: skip
            continue
        if job.timing is None:
            finish(job.cell, job.row | {"status": event.status, "message": event.message}, None)
        else:
            finish(job.cell, _measured_row(job, event, machine_peak_gflops), job.timing)
        in_flight -= 1
        feed()
    return started


def approximation_cells(config: ComplexityConfig) -> list[CellSpec]:
    """One cell per non-exact variant × length: its output error against exact softmax."""
    inexact = [v for v in config.variants if not attention_class(parse_attention_spec(v).name).exact]
    lengths = [n for n in config.seq_lens if n <= APPROXIMATION_MAX_SEQ_LEN]
    return [c for c in plan_cells(config) if c.scope == "attention" and c.pass_ == config.passes[0]
            and c.spec in inexact and c.seq_len in lengths]  # fmt: skip


def run_approximation(
    config: ComplexityConfig, run_dir: RunDir, executor: Executor, *, on_event: OnEvent = ignore
) -> int:
    done = {(str(r["spec"]), int(r["seq_len"])) for _, r in run_dir.rows(APPROXIMATION_CSV).iterrows()}
    todo = [c for c in approximation_cells(config) if (c.spec, c.seq_len) not in done]
    if not todo:
        return 0
    out = run_dir.appender(APPROXIMATION_CSV, APPROXIMATION_COLUMNS)
    on_event(PhaseStarted("error vs softmax", len(todo)))
    variants = _Variants()
    for cell in todo:
        executor.submit(approximation_cell, cell, timeout_s=cell.time_budget_s, tag=cell)
    ran = 0
    for event in executor.outcomes():
        if isinstance(event, Progress):
            continue
        cell = event.tag
        name, family, _ = variants(cell.spec)
        base = _base_row(cell, name, family)
        row = {k: base[k] for k in APPROXIMATION_COLUMNS if k in base}
        row |= {"status": event.status, "message": event.message}
        if event.status == "ok":
            row["rel_error"] = event.result.rel_error
            if not math.isfinite(row["rel_error"]):  # a nan error is no measurement: not ok
                row |= {"status": "error", "message": f"approximation error is {row['rel_error']}"}
        out.append(row)
        ran += 1
        on_event(CellFinished(f"{cell.spec} n={cell.seq_len}", row))
    return ran


def pending_cells(config: ComplexityConfig, run_dir: RunDir) -> int:
    done = {cell_key(r) for _, r in run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS).iterrows()}
    return sum(_key(c) not in done for c in plan_cells(config))


def measure_machine_peak(executor: Executor, config: ComplexityConfig) -> float | None:
    cell = PeakCell(device=config.device, dtype=config.dtype, threads=config.threads)
    outcome = run_one(executor, matmul_peak_gflops, cell, timeout_s=MACHINE_PEAK_TIMEOUT_S)
    return float(outcome.result) if outcome.status == "ok" else None


def complexity_job(
    config: ComplexityConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    max_cells: int | None = None,
    on_event: OnEvent = ignore,
) -> pd.DataFrame:
    """Run (or finish) the sweep in ``run_dir``, then the approximation errors; returns every row of the run."""
    peak = run_dir.read_manifest().get("machine", {}).get("matmul_peak_gflops")
    if peak is None:
        peak = measure_machine_peak(executor, config)
        run_dir.update_manifest(machine={"matmul_peak_gflops": peak, "matmul": "2048x2048 mm, best of autorange"})
    run_sweep(config, run_dir, executor, machine_peak_gflops=peak, on_event=on_event, max_cells=max_cells)
    if not run_dir.stopped_early:  # the sweep finished: measure how far each approximation is
        run_approximation(config, run_dir, executor, on_event=on_event)
    return run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
