"""Sweep events rendered as Rich progress bars: one bar per phase, with ETA and the running cell."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from attnbench.cli.console import console
from attnbench.reporting.units import human_bytes, human_seconds
from attnbench.sweeps.events import CellFinished, CellProgress, CellStarted, OnEvent, PhaseStarted, SweepEvent


def result_text(row: dict[str, Any]) -> str:
    """How a finished cell reads in the bar: its time and memory, its test accuracy, its error, or its status."""
    if row.get("status") != "ok":
        return str(row.get("status"))
    if "time_median_s" in row:
        return f"{human_seconds(row.get('time_median_s'))}, {human_bytes(row.get('peak_mem_bytes'))}"
    if isinstance(row.get("test_acc"), float):
        return f"test {row['test_acc']:.3f}"
    if "rel_error" in row:
        return f"error {row['rel_error']:.3g}"
    return "ok"


def progress_text(info: dict[str, Any]) -> str:
    if "suspect" in info:  # a timing to be measured again later (complexity sweep)
        return f"suspect ({info['suspect']}), {info.get('next', '')}"
    val = "" if info.get("val_acc") is None else f" val {info['val_acc']:.3f}"
    return f"step {info['step']}/{info['steps']} loss {info['loss']:.3f}{val}"


@contextmanager
def sweep_progress() -> Iterator[OnEvent]:
    """An event handler drawing one bar per phase; the last bar is closed on exit."""
    current: list[Progress] = []

    def close() -> None:
        if current:
            current.pop().stop()

    def on_event(event: SweepEvent) -> None:
        if isinstance(event, PhaseStarted):
            close()
            bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[current]}"),
                console=console, transient=False,
            )  # fmt: skip
            bar.add_task(event.name, total=event.total, current="")
            bar.start()
            current.append(bar)
            return
        if not current:
            return
        bar = current[0]
        task = bar.task_ids[0]
        if isinstance(event, CellStarted):
            bar.update(task, current=event.label)
        elif isinstance(event, CellProgress):
            bar.update(task, current=f"{event.label}: {progress_text(event.info)}")
        elif isinstance(event, CellFinished):
            bar.update(task, advance=1, current=f"{event.label}: {result_text(event.row)}")

    try:
        yield on_event
    finally:
        close()
