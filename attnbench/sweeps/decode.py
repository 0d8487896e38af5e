"""The decode sweep: each causal variant × context length × batch, prefilled and stepped in worker processes.

The complexity sweep's rules hold here: cells run context by context, each in a fresh worker through the
:class:`~attnbench.execution.protocol.Executor`; rows are appended as they finish and ``--resume`` runs only
the cells without one; a variant that failed (oom, timeout, error) at c is skipped at larger c; a cell whose
prefill is predicted over the memory budget is skipped without running; a variant that cannot decode
(``decode_unsupported_reason``) gets a ``skipped`` row with the reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import pandas as pd

from attnbench.execution.protocol import Executor, Progress
from attnbench.measure.cells import CellSpec
from attnbench.measure.cost import cell_cost
from attnbench.measure.decode import DecodeCell, DecodeReading, decode_cell
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import DECODE_COLUMNS, DECODE_CSV, FAILED
from attnbench.sweeps.decode_config import DecodeConfig, decode_reason
from attnbench.sweeps.events import CellFinished, CellStarted, OnEvent, PhaseStarted, ignore
from attnbench.sweeps.variant_lookup import VariantLookup

# Until the complexity sweep's timing evidence (issue 12) covers decoding: a step's timings are called
# stable when their spread is small against their median and there are enough of them to say so.
STABLE_MAX_RELATIVE_IQR = 0.25
STABLE_MIN_STEPS = 5

Key = tuple[str, int, int]


def decode_stable(step_times_s: Sequence[float], median_s: float, iqr_s: float) -> bool:
    """The stability rule (one function, to be swapped for the complexity sweep's): IQR / median ≤ 0.25 over
    at least 5 timed steps."""
    return len(step_times_s) >= STABLE_MIN_STEPS and median_s > 0 and iqr_s / median_s <= STABLE_MAX_RELATIVE_IQR


def cell_key(row: dict[str, Any] | pd.Series) -> Key:
    return (str(row["spec"]), int(row["batch"]), int(row["context"]))


def _key(cell: DecodeCell) -> Key:
    return (cell.spec, cell.batch, cell.context)


def label(cell: DecodeCell) -> str:
    return f"{cell.spec} decode b={cell.batch} c={cell.context}"


def prefill_cell(cell: DecodeCell) -> CellSpec:
    """The prefill as a complexity cell (a causal forward over c tokens), for its analytic peak."""
    return CellSpec(
        spec=cell.spec, scope="attention", pass_="fwd", batch=cell.batch, heads=cell.heads, head_dim=cell.head_dim,
        seq_len=cell.context, causal=True, dtype=cell.dtype, device=cell.device, threads=cell.threads,
        plugins=cell.plugins, seed=cell.seed,
    )  # fmt: skip


def _base_row(cell: DecodeCell, name: str, family: str) -> dict[str, Any]:
    return {
        "spec": cell.spec, "variant": name, "family": family, "device": cell.device, "dtype": cell.dtype,
        "threads": cell.threads, "batch": cell.batch, "heads": cell.heads, "head_dim": cell.head_dim,
        "context": cell.context,
    }  # fmt: skip


def _over_budget(cell: DecodeCell, budget: int) -> str | None:
    if not budget:
        return None
    prefill = prefill_cell(cell)
    cost = cell_cost(prefill)
    if cost.predicted_peak_bytes is None or cost.predicted_peak_bytes + cost.input_bytes <= budget:
        return None
    total = cost.predicted_peak_bytes + cost.input_bytes
    return f"predicted prefill peak {total / 2**20:.0f} MiB exceeds the memory budget {budget / 2**20:.0f} MiB"


def measured_row(row: dict[str, Any], reading: DecodeReading) -> dict[str, Any]:
    return row | {
        "status": "ok", "prefill_s": reading.prefill_s, "decode_median_s": reading.decode_median_s,
        "decode_iqr_s": reading.decode_iqr_s, "state_bytes": reading.state_bytes,
        "peak_mem_bytes": reading.peak_mem_bytes,
        "stable": decode_stable(reading.step_times_s, reading.decode_median_s, reading.decode_iqr_s),
        "message": "; ".join(reading.notes),
    }  # fmt: skip


def run_decode(
    config: DecodeConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    on_event: OnEvent = ignore,
    max_cells: int | None = None,
) -> int:
    """Run every cell not yet in ``decode.csv``; returns how many started. Rows are appended as they finish."""
    done_rows = run_dir.rows(DECODE_CSV, DECODE_COLUMNS)
    done = {cell_key(r) for _, r in done_rows.iterrows()}
    failed_at: dict[tuple[str, int], tuple[int, str]] = {}
    for _, r in done_rows.sort_values("context").iterrows():
        if r["status"] in FAILED:
            failed_at.setdefault((str(r["spec"]), int(r["batch"])), (int(r["context"]), str(r["status"])))
    out = run_dir.appender(DECODE_CSV, DECODE_COLUMNS)
    todo = deque(c for c in config.cells() if _key(c) not in done)
    on_event(PhaseStarted("decode", len(todo) if max_cells is None else min(len(todo), max_cells)))
    variants = VariantLookup()
    started = in_flight = 0

    def finish(cell: DecodeCell, row: dict[str, Any]) -> None:
        out.append(row)
        if row["status"] in FAILED:
            failed_at.setdefault(_key(cell)[:2], (cell.context, row["status"]))
        on_event(CellFinished(label(cell), row))

    def skip_message(cell: DecodeCell) -> str | None:
        if reason := decode_reason(cell.spec, cell.device):
            return reason
        if earlier := failed_at.get(_key(cell)[:2]):
            return f"skipped: {earlier[1]} at c={earlier[0]}"
        return _over_budget(cell, config.memory_budget_bytes)

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
            name, family, _ = variants(cell.spec)
            row = _base_row(cell, name, family)
            skip = skip_message(cell)
            if skip is not None:
                finish(cell, row | {"status": "skipped", "message": skip})
                continue
            executor.submit(decode_cell, cell, timeout_s=cell.time_budget_s, tag=(cell, row))
            in_flight += 1

    feed()
    for event in executor.outcomes():
        if isinstance(event, Progress):
            continue
        cell, row = event.tag
        if event.status == "ok":
            finish(cell, measured_row(row, event.result))
        else:
            finish(cell, row | {"status": event.status, "message": event.message})
        in_flight -= 1
        feed()
    return started


def pending_cells(config: DecodeConfig, run_dir: RunDir) -> int:
    done = {cell_key(r) for _, r in run_dir.rows(DECODE_CSV, DECODE_COLUMNS).iterrows()}
    return sum(_key(c) not in done for c in config.cells())


def decode_job(
    config: DecodeConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    max_cells: int | None = None,
    on_event: OnEvent = ignore,
) -> pd.DataFrame:
    """Run (or finish) the decode sweep in ``run_dir``; returns every row of the run."""
    run_decode(config, run_dir, executor, on_event=on_event, max_cells=max_cells)
    return run_dir.rows(DECODE_CSV, DECODE_COLUMNS)
