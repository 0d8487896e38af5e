"""Old path of the executor, with the old one-call ``run(kind, payload)``: see :mod:`attnbench.execution`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass, replace
from typing import Any

from attnbench.execution import local
from attnbench.execution.protocol import Outcome, run_one
from attnbench.measure.approximation import approximation_cell
from attnbench.measure.cells import CellSpec, MemoryCell
from attnbench.measure.memory import memory_cell
from attnbench.measure.timing import time_cell

__all__ = ["LocalExecutor", "Outcome"]


def _cell(payload: dict[str, Any]) -> CellSpec:
    values = {k: v for k, v in payload.items() if k != "warmup_full"}
    return CellSpec(**{**values, "plugins": tuple(values.get("plugins", ()))})


class LocalExecutor(local.LocalExecutor):
    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout_s: float | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Outcome:
        """One timing, memory or approximation cell given as a dict; its result comes back as a dict."""
        cell = _cell(payload)
        if kind == "memory":
            job: Any = MemoryCell(cell, warmup_full=payload.get("warmup_full", True))
            fn: Any = memory_cell
        else:
            job, fn = cell, {"time": time_cell, "approximation": approximation_cell}[kind]
        outcome = run_one(self, fn, job, timeout_s=timeout_s, on_progress=on_progress)
        if outcome.status == "ok" and is_dataclass(outcome.result):
            return replace(outcome, result=asdict(outcome.result))
        return outcome
