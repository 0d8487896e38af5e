"""The main job: a suite's complexity sweep, then its accuracy sweep, then the report — in one run directory."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from attnbench.execution.protocol import Executor
from attnbench.runs.environment import device_memory_bytes
from attnbench.runs.rundir import RunDir
from attnbench.sweeps.accuracy import DEFAULT_THREADS, AccuracyConfig, TaskPlan, accuracy_job, mad_grid
from attnbench.sweeps.complexity import ComplexityConfig, complexity_job
from attnbench.sweeps.decode import decode_job
from attnbench.sweeps.decode_config import DecodeConfig
from attnbench.sweeps.events import OnEvent, ignore
from attnbench.sweeps.options import parse_bytes
from attnbench.sweeps.suite_file import Suite


def complexity_config(suite: Suite, *, device: str, threads: int, plugins: list[str]) -> ComplexityConfig | None:
    section = suite.complexity
    if section is None:
        return None
    values: dict[str, Any] = asdict(section)
    budget = parse_bytes(values["memory_budget"], available=device_memory_bytes(device))
    return ComplexityConfig(**values, device=device, threads=threads, plugins=plugins, memory_budget_bytes=budget)


def accuracy_config(suite: Suite, *, device: str, threads: int | None, plugins: list[str]) -> AccuracyConfig | None:
    """``threads`` (the command line's) wins over the suite's ``[accuracy].threads``, then one thread."""
    if suite.accuracy is None:
        return None
    plans = []
    grid = mad_grid() if suite.accuracy.mad_grid else [{}]
    for entry in suite.accuracy.tasks:
        seeds = list(range(entry.seeds)) if isinstance(entry.seeds, int) else entry.seeds
        seq_lens = entry.seq_lens if isinstance(entry.seq_lens, list) or entry.seq_lens is None else None
        for point in grid:  # one plan per grid point; the report keeps each cell's best (MAD's protocol)
            plans.append(
                TaskPlan(
                    task=entry.task, variants=entry.variants, preset=entry.preset, seeds=seeds,
                    overrides={**entry.overrides, **point}, seq_lens=seq_lens, baselines=entry.baselines,
                )
            )  # fmt: skip
    threads = threads or suite.accuracy.threads or DEFAULT_THREADS
    return AccuracyConfig(tasks=plans, device=device, threads=threads, plugins=plugins)


def decode_config(suite: Suite, *, device: str, threads: int, plugins: list[str]) -> DecodeConfig | None:
    if suite.decode is None:
        return None
    values: dict[str, Any] = asdict(suite.decode)
    budget = parse_bytes(values["memory_budget"], available=device_memory_bytes(device))
    return DecodeConfig(**values, device=device, threads=threads, plugins=plugins, memory_budget_bytes=budget)


def run_suite(
    run_dir: RunDir,
    executor: Executor,
    *,
    complexity: ComplexityConfig | None,
    accuracy: AccuracyConfig | None,
    decode: DecodeConfig | None = None,
    max_cells: int | None = None,
    on_event: OnEvent = ignore,
) -> None:
    """Run what is missing of each part (the caller writes the report from the result files)."""
    if complexity is not None:
        complexity_job(complexity, run_dir, executor, max_cells=max_cells, on_event=on_event)
    if accuracy is not None:
        accuracy_job(accuracy, run_dir, executor, max_cells=max_cells, on_event=on_event)
    if decode is not None:
        decode_job(decode, run_dir, executor, max_cells=max_cells, on_event=on_event)
