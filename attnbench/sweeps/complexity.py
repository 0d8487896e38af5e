"""The scaling sweep: each variant × sequence length × pass, timed and metered in worker processes.

Cells run length by length (every variant at n before any at 2n), so an interrupted run already covers
every variant at the smaller lengths. A variant that fails (oom, timeout, error) at n is skipped at larger
n; a cell whose predicted peak exceeds the memory budget is recorded ``skipped`` without running.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attnbench.core.baseline import LSTM_BASELINE
from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.execution.protocol import Executor, Outcome, Progress, run_on_every_node
from attnbench.measure.approximation import approximation_cell
from attnbench.measure.cells import CellSpec, MemoryCell, PeakCell, Timing
from attnbench.measure.cost import VariantCodeError, cell_cost, cell_flops, guarded, input_bytes, predicted_peak
from attnbench.measure.memory import memory_cell
from attnbench.measure.peak import matmul_peak_gflops, memory_bandwidth_gbs
from attnbench.measure.stability import Reading, off_series, reproduced
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
from attnbench.sweeps.events import CellFinished, CellProgress, CellStarted, OnEvent, PhaseStarted, ignore
from attnbench.sweeps.variant_lookup import VariantLookup

__all__ = [
    "ComplexityConfig", "cell_flops", "complexity_job", "default_variants", "input_bytes", "plan_cells",
    "predicted_peak", "run_approximation", "run_sweep",
]  # fmt: skip

FULL_WARMUP_BELOW_S = 0.25  # warming the memory worker up at full size costs one more call: worth it below this
APPROXIMATION_MAX_SEQ_LEN = 8192  # the error is measured up to here: beyond, it costs more than it tells
MACHINE_PEAK_TIMEOUT_S = 120.0


def plan_cells(config: ComplexityConfig) -> list[CellSpec]:
    """Every cell, round by round of ascending length; within a round, a shuffled order seeded by the run's seed.

    With ``layer`` scope, an LSTM layer (spec ``lstm``) is timed beside the attention layers.

    The shuffle keeps a slow drift of the machine (thermal, a neighbour's job) from lining up with one variant.
    """
    cells = []
    for n in config.seq_lens:
        round_ = [
            CellSpec(
                spec=spec, scope=scope, pass_=pass_, batch=config.batch, heads=config.heads,
                head_dim=config.head_dim, seq_len=n, causal=config.causal, dtype=config.dtype, device=config.device,
                threads=config.threads, compile=config.compile, plugins=tuple(config.plugins), seed=config.seed,
                min_run_time=config.min_run_time, max_run_time=config.max_run_time,
                time_budget_s=config.time_budget_s,
            )
            for scope in config.scopes
            for spec in ([*config.variants, LSTM_BASELINE] if scope == "layer" else config.variants)
            for pass_ in config.passes
        ]  # fmt: skip
        random.Random(f"{config.seed}:{n}").shuffle(round_)
        cells += round_
    return cells


Key = tuple[str, str, str, int]


def cell_key(row: dict[str, Any] | pd.Series) -> Key:
    return (str(row["spec"]), str(row["scope"]), str(row["pass"]), int(row["seq_len"]))


def _key(cell: CellSpec) -> Key:
    return (cell.spec, cell.scope, cell.pass_, cell.seq_len)


def label(cell: CellSpec) -> str:
    return f"{cell.spec} {cell.scope} {cell.pass_} n={cell.seq_len}"


_Variants = VariantLookup  # shared with the decode sweep


def _base_row(cell: CellSpec, name: str, family: str) -> dict[str, Any]:
    return {
        "spec": cell.spec, "variant": name, "family": family, "scope": cell.scope,
        "pass": cell.pass_, "device": cell.device, "dtype": cell.dtype, "threads": cell.threads,
        "batch": cell.batch, "heads": cell.heads, "head_dim": cell.head_dim, "seq_len": cell.seq_len,
        "causal": cell.causal,
    }  # fmt: skip


@dataclass(frozen=True)
class _InFlight:
    """A measured cell between its outcomes: its row so far, which attempt this is and, once timed, its timing."""

    cell: CellSpec
    row: dict[str, Any]
    timing: Timing | None = None
    attempt: int = 1
    node: str = ""  # where it was timed: its memory reading runs there too, its peak_fraction uses its peak


@dataclass
class _Attempts:
    """Every ok attempt at one cell so far, and what the first attempt's memory worker said."""

    job: _InFlight
    memory: Outcome | None = None
    readings: list[tuple[Reading, Timing]] = field(default_factory=list)
    tries: int = 0


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
        return f"predicted peak {predicted / 2**20:.0f} MiB + inputs exceeds the memory budget {budget / 2**20:.0f} MiB"
    return None


def _measured_row(
    job: _InFlight, memory: Outcome, machine_peak_gflops: float | None, reading: Reading | None = None
) -> dict[str, Any]:
    t = job.timing
    assert t is not None
    reading = reading or Reading.of(t, job.cell.threads)
    row = job.row | {
        "node": job.node,
        "time_median_s": t.time_median_s,
        "time_iqr_s": t.time_iqr_s,
        "first_call_s": t.first_call_s,
        "gflops_per_s": row_flops(job.row) / t.time_median_s / 1e9 if t.time_median_s > 0 else None,
        "time_min_s": reading.time_min_s,
        "time_cv": reading.time_cv,
        "wait_fraction": reading.wait_fraction,
        "stable": True,
        "attempts": 1,
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


def raw_rows(row: dict[str, Any], timing: Timing | None, attempt: int = 1) -> Iterator[dict[str, Any]]:
    if timing is None:
        return
    keys = ("spec", "scope", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len", "causal")
    base = {k: row[k] for k in keys}
    for i, t in enumerate(timing.raw_times_s):
        evidence = timing.blocks[i] if i < len(timing.blocks) else None
        yield base | {"block": i, "runs_per_block": timing.runs_per_block, "time_s": t, "attempt": attempt} | (
            {} if evidence is None else {
                "wall_s": evidence.wall_s, "cpu_s": evidence.cpu_s, "run_delay_s": evidence.run_delay_s,
                "pressure_s": evidence.pressure_s,
            }
        )  # fmt: skip


def _series_key(key: Key) -> tuple[str, str, str]:
    return key[:3]


def _stable_series(rows: pd.DataFrame) -> dict[tuple[str, str, str], dict[int, float]]:
    """The stable ok times already in ``complexity.csv``, per variant × scope × pass: what the series rule reads."""
    series: dict[tuple[str, str, str], dict[int, float]] = {}
    for _, r in rows.iterrows():
        if r["status"] == "ok" and _is_stable(r.get("stable")) and pd.notna(r["time_median_s"]):
            series.setdefault(_series_key(cell_key(r)), {})[int(r["seq_len"])] = float(r["time_median_s"])
    return series


def _is_stable(value: Any) -> bool:
    """A missing ``stable`` (a run from before the trust columns) counts as stable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return str(value).strip().lower() not in ("false", "0")


def run_sweep(
    config: ComplexityConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    machine_peak_gflops: float | dict[str, float | None] | None,
    on_event: OnEvent = ignore,
    max_cells: int | None = None,
) -> int:
    """Run every cell not yet in ``complexity.csv``; returns how many ran. Rows are appended as cells settle.

    A cell settles when its reading is clean (tight blocks, the CPU was the worker's, on its variant's
    series — or reproduced) or when its re-measures are spent; a suspect cell is measured again in a fresh
    worker, on the node of its first attempt, after the cells still planned, and its row records the attempt
    with the best evidence. ``machine_peak_gflops``: one peak, or each node's by name (a row's peak_fraction
    uses its own node's).
    """
    rules = config.stability

    def peak_of(node: str) -> float | None:
        if isinstance(machine_peak_gflops, dict):
            return machine_peak_gflops.get(node)
        return machine_peak_gflops
    done_rows = run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
    done = {cell_key(r) for _, r in done_rows.iterrows()}
    series = _stable_series(done_rows)
    failed_at: dict[tuple[str, str, str], tuple[int, str]] = {}
    for _, r in done_rows.sort_values("seq_len").iterrows():
        if r["status"] in FAILED:
            failed_at.setdefault((r["spec"], r["scope"], r["pass"]), (int(r["seq_len"]), str(r["status"])))
    run_dir.drop_orphan_rows(COMPLEXITY_RAW_CSV, main=COMPLEXITY_CSV, key=("spec", "scope", "pass", "seq_len"))
    out = run_dir.appender(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
    raw = run_dir.appender(COMPLEXITY_RAW_CSV, COMPLEXITY_RAW_COLUMNS)
    todo = deque(c for c in plan_cells(config) if _key(c) not in done)
    later: deque[Key] = deque()  # suspect cells waiting for a re-measure
    attempts: dict[Key, _Attempts] = {}
    remeasures_left = rules.remeasure_budget(len(todo))
    on_event(PhaseStarted("complexity", len(todo) if max_cells is None else min(len(todo), max_cells)))
    variants = _Variants()
    started = in_flight = 0
    # on CPU two measuring cells would take each other's cores, whatever the executor could run at once
    limit = 1 if config.device == "cpu" else executor.capacity

    def finish(cell: CellSpec, row: dict[str, Any], timing: Timing | None) -> None:
        raw.extend(raw_rows(row, timing))
        out.append(row)  # last: a row present means its raw times are complete
        if row["status"] in FAILED:
            failed_at.setdefault(_key(cell)[:3], (cell.seq_len, row["status"]))
        on_event(CellFinished(label(cell), row))

    def settle(key: Key, *, stable: bool, why: str) -> None:
        state = attempts.pop(key)
        clean = [(r, t) for r, t in state.readings if not r.doubts(rules)]
        pool = clean or state.readings
        if stable and not reproduced([r for r, _ in clean], rules.reproduce_factor):
            on_line = [(r, t) for r, t in clean if not _off(key, r)]
            pool = on_line or pool
        reading, timing = min(pool, key=lambda rt: (*rt[0].badness(), rt[0].time_median_s))
        assert state.memory is not None
        job = _InFlight(state.job.cell, state.job.row, timing, node=state.job.node)
        row = _measured_row(job, state.memory, peak_of(job.node), reading)
        row |= {"stable": stable, "attempts": state.tries}
        if not stable:  # the reason the kept reading itself gives, else the one that triggered the re-measures
            why = " and ".join(reading.doubts(rules)) or _off(key, reading) or why
            row["message"] = "; ".join(m for m in (f"unstable: {why}", row["message"]) if m)
        elif row["status"] == "ok":
            series.setdefault(_series_key(key), {})[key[3]] = reading.time_median_s
        out.append(row)
        if row["status"] in FAILED:
            failed_at.setdefault(key[:3], (key[3], row["status"]))
        on_event(CellFinished(label(job.cell), row))

    def _off(key: Key, reading: Reading) -> str | None:
        return off_series(key[3], reading.time_median_s, series.get(_series_key(key), {}), rules.series_factor)

    def judge(key: Key) -> None:
        """Settle the cell, or queue it for another attempt."""
        nonlocal remeasures_left
        state = attempts[key]
        latest = state.readings[-1][0]
        why = " and ".join(latest.doubts(rules))
        if not why:
            clean = [r for r, _ in state.readings if not r.doubts(rules)]
            off = _off(key, latest)
            if off is None or reproduced(clean, rules.reproduce_factor):
                settle(key, stable=True, why="")
                return
            why = off
        if state.tries <= rules.remeasure and remeasures_left > 0:
            remeasures_left -= 1
            later.append(key)
            on_event(CellProgress(label(state.job.cell), {"suspect": why, "next": "measured again later"}))
        else:
            settle(key, stable=False, why=why)

    def feed() -> None:
        nonlocal started, in_flight
        while in_flight < limit and (todo or later):
            if not todo:
                key = later.popleft()
                state = attempts[key]
                state.tries += 1
                job = _InFlight(state.job.cell, state.job.row, attempt=state.tries, node=state.job.node)
                executor.submit(
                    time_cell, job.cell, timeout_s=job.cell.time_budget_s, tag=job,
                    **({"node": job.node} if job.node else {}),  # readings of one cell stay on one node type
                )  # fmt: skip
                in_flight += 1
                continue
            if todo and max_cells is not None and started >= max_cells:
                run_dir.stopped_early = True
                todo.clear()  # no new cell; the started ones still get their re-measures and settle
                continue
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
        key = _key(job.cell)
        if job.attempt > 1:  # a re-measure: timing only, the first attempt's memory reading stands
            if event.status == "ok":
                raw.extend(raw_rows(job.row, event.result, job.attempt))
                attempts[key].readings.append((Reading.of(event.result, job.cell.threads), event.result))
            judge(key)  # a failed re-measure adds no reading: the cell is judged on the ones it has
        elif job.timing is None and event.status == "ok":
            warmup_full = event.result.time_median_s < FULL_WARMUP_BELOW_S
            executor.submit(
                memory_cell, MemoryCell(job.cell, warmup_full=warmup_full), timeout_s=job.cell.time_budget_s,
                tag=_InFlight(job.cell, job.row, event.result, node=event.node),
                **({"node": event.node} if event.node else {}),  # its memory is read where it was timed
            )  # fmt: skip
            continue
        elif job.timing is None:
            finish(job.cell, job.row | {"status": event.status, "message": event.message, "node": event.node}, None)
        elif event.status != "ok":
            finish(job.cell, _measured_row(job, event, peak_of(job.node)), job.timing)
        else:
            raw.extend(raw_rows(job.row, job.timing, 1))
            state = _Attempts(job, event, [(Reading.of(job.timing, job.cell.threads), job.timing)], tries=1)
            attempts[key] = state
            judge(key)
        in_flight -= 1
        feed()
    return started


def approximation_cells(config: ComplexityConfig) -> list[CellSpec]:
    """One cell per non-exact variant × length: its output error against exact softmax."""
    classes = {v: attention_class(parse_attention_spec(v).name) for v in config.variants}
    inexact = [  # a variant that cannot run this mode here (causal-only, say) has no error to measure
        v for v, cls in classes.items()
        if not cls.exact and cls.unsupported_reason(device=config.device, backward=False, causal=config.causal) is None
    ]  # fmt: skip
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
        row |= {"status": event.status, "message": event.message, "node": event.node}
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


def measure_machine_peaks(executor: Executor, config: ComplexityConfig) -> dict[str, float | None]:
    """Each node's matmul peak, by node name."""
    cell = PeakCell(device=config.device, dtype=config.dtype, threads=config.threads)
    outcomes = run_on_every_node(executor, matmul_peak_gflops, cell, timeout_s=MACHINE_PEAK_TIMEOUT_S)
    return {node: float(o.result) if o.status == "ok" else None for node, o in outcomes.items()}


def measure_bandwidths(executor: Executor, config: ComplexityConfig) -> dict[str, float | None]:
    """Each node's memory bandwidth (GB/s of a large copy), by node name: the ceiling of memory-bound cells."""
    cell = PeakCell(device=config.device, dtype=config.dtype, threads=config.threads)
    outcomes = run_on_every_node(executor, memory_bandwidth_gbs, cell, timeout_s=MACHINE_PEAK_TIMEOUT_S)
    return {node: float(o.result) if o.status == "ok" else None for node, o in outcomes.items()}


def complexity_job(
    config: ComplexityConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    max_cells: int | None = None,
    on_event: OnEvent = ignore,
) -> pd.DataFrame:
    """Run (or finish) the sweep in ``run_dir``, then the approximation errors; returns every row of the run."""
    machine = run_dir.read_manifest().get("machine") or {}
    peaks: dict[str, float | None] = dict(machine.get("node_peaks_gflops") or {})
    if machine.get("matmul_peak_gflops") is not None and not peaks:  # a run started before nodes were recorded
        peaks = dict.fromkeys(executor.nodes(), machine["matmul_peak_gflops"])
    missing = [n for n in executor.nodes() if n not in peaks]
    if missing:
        peaks |= measure_machine_peaks(executor, config)
        first = next((p for p in peaks.values() if p is not None), None)
        run_dir.update_manifest(
            machine={**machine, "matmul_peak_gflops": machine.get("matmul_peak_gflops", first),
                     "node_peaks_gflops": peaks, "matmul": "2048x2048 mm, best of autorange"}
        )  # fmt: skip
    machine = run_dir.read_manifest().get("machine") or {}
    bandwidths: dict[str, float | None] = dict(machine.get("node_bandwidths_gbs") or {})
    if any(bandwidths.get(node) is None for node in executor.nodes()):
        bandwidths |= measure_bandwidths(executor, config)
        first_bandwidth = next((b for b in bandwidths.values() if b is not None), None)
        run_dir.update_manifest(
            machine={**machine, "memory_bandwidth_gbs": machine.get("memory_bandwidth_gbs") or first_bandwidth,
                     "node_bandwidths_gbs": bandwidths,
                     "bandwidth": "256 MiB copy (STREAM copy: bytes read + written), best of autorange"}
        )  # fmt: skip
    run_sweep(config, run_dir, executor, machine_peak_gflops=peaks, on_event=on_event, max_cells=max_cells)
    if not run_dir.stopped_early:  # the sweep finished: measure how far each approximation is
        run_approximation(config, run_dir, executor, on_event=on_event)
    return run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
