"""The executor seam: a sweep submits (function, typed cell) pairs and consumes outcomes as they finish.

Everything a sweep does with results — statuses, budgets, resume, the append-only files, progress — reads
:class:`Outcome` and :class:`Progress` events and does not care which executor produced them. Every cell
runs in a fresh process of its own on every executor, so one cell cannot disturb the next one's memory
reading and an out-of-memory kill takes only that cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

DEFAULT_RETRIES = 1  # an executor runs again a cell whose node or worker was lost, once
OutcomeStatus = Literal["ok", "oom", "timeout", "error", "skipped"]
Report = Callable[[dict[str, Any]], None]  # what a running cell calls to send progress to the parent
C = TypeVar("C")
R = TypeVar("R")
CellFunction = Callable[[C, Report], R]  # a plain top-level function: picklable by reference


@dataclass(frozen=True)
class Submission:
    fn: Callable[[Any, Report], Any]
    cell: Any
    timeout_s: float | None
    tag: Any = None  # the caller's handle: comes back on the cell's outcome and progress events


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    result: Any = None  # the function's typed result when status is "ok"
    message: str = ""
    elapsed_s: float = 0.0
    tag: Any = None
    node: str = ""  # the machine the cell ran on (rows record it; peak_fraction uses that machine's peak)
    started_at: float = 0.0  # wall clock (time.time()) when its process started and ended
    ended_at: float = 0.0


@dataclass(frozen=True)
class Progress:
    info: dict[str, Any]
    tag: Any = None


Event = Outcome | Progress


class Executor(Protocol):
    """Runs submitted cells, each in a fresh process, and yields their events as they happen."""

    capacity: int  # cells it runs at once: a sweep keeps at most this many in flight

    def submit(
        self,
        fn: Callable[[Any, Report], Any],
        cell: Any,
        *,
        timeout_s: float | None,
        tag: Any = None,
        node: str | None = None,
    ) -> None:
        """Queue one cell; it runs when a slot is free (on ``node`` when given: a name from :meth:`nodes`).

        A cell may be submitted while outcomes are consumed.
        """
        ...

    def nodes(self) -> list[str]:
        """The machines cells run on, by the name outcomes carry."""
        ...

    def outcomes(self) -> Iterator[Event]:
        """Progress of running cells and each cell's outcome as it finishes, until nothing is queued or running."""
        ...

    def cancel(self) -> None:
        """Drop the queued cells and end the running ones (Ctrl-C)."""
        ...


def run_one(
    executor: Executor,
    fn: Callable[[Any, Report], Any],
    cell: Any,
    *,
    timeout_s: float | None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """Submit one cell and wait for its outcome (for one-off cells such as the machine's matmul peak)."""
    executor.submit(fn, cell, timeout_s=timeout_s)
    outcome: Outcome | None = None
    for event in executor.outcomes():
        if isinstance(event, Progress):
            if on_progress is not None:
                on_progress(event.info)
        else:
            outcome = event
    if outcome is None:
        raise RuntimeError("the executor finished without an outcome for the submitted cell")
    return outcome


def run_on_every_node(
    executor: Executor, fn: Callable[[Any, Report], Any], cell: Any, *, timeout_s: float | None
) -> dict[str, Outcome]:
    """One run of ``cell`` on each of the executor's machines (e.g. each machine's matmul peak), by node name."""
    for node in executor.nodes():
        executor.submit(fn, cell, timeout_s=timeout_s, tag=node, node=node)
    return {event.tag: event for event in executor.outcomes() if isinstance(event, Outcome)}
