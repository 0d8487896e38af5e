"""The default executor: one cell at a time, each in a fresh child forked from a server with torch imported.

A fresh child per cell means a cell cannot disturb the next one's memory reading, an out-of-memory kill
takes only that child (children raise their own ``oom_score_adj``), and a cell over its time budget is
killed. Forking from a server that already imported torch keeps a child's start to ~10 ms. One cell at a
time: two timing or memory cells on the same CPU would disturb each other.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from attnbench.execution.node import local_node
from attnbench.execution.protocol import Event, Outcome, OutcomeStatus, Progress, Report, Submission

_PRELOAD = ["attnbench.execution.preload"]


def _child(conn: Connection, fn: Callable[[Any, Report], Any], cell: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this child
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ... and a SIGTERM to the group just ends it
    try:
        with open("/proc/self/oom_score_adj", "w") as f:  # be the OOM killer's first choice, not the parent
            f.write("1000")
    except OSError:
        pass
    from attnbench.execution.worker import run_cell

    def report(progress: dict[str, Any]) -> None:
        conn.send(("progress", progress, ""))

    try:
        conn.send(run_cell(fn, cell, report))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone (stopped, killed): nobody is left to tell, and a traceback helps no one
    finally:
        conn.close()


class LocalExecutor:
    """Runs each submitted cell in its own child process of a forkserver, one at a time, in submission order."""

    capacity = 1

    def __init__(self) -> None:
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._queue: deque[Submission] = deque()
        self._current: mp.process.BaseProcess | None = None

    def submit(
        self,
        fn: Callable[[Any, Report], Any],
        cell: Any,
        *,
        timeout_s: float | None,
        tag: Any = None,
        node: str | None = None,  # one machine: every cell runs on it
    ) -> None:
        self._queue.append(Submission(fn, cell, timeout_s, tag))

    def nodes(self) -> list[str]:
        return [local_node()]

    def outcomes(self) -> Iterator[Event]:
        while self._queue:
            yield from self._run(self._queue.popleft())

    def cancel(self) -> None:
        self._queue.clear()
        process = self._current
        if process is not None and process.is_alive():
            process.kill()

    def _run(self, job: Submission) -> Iterator[Event]:
        receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_child, args=(sender, job.fn, job.cell), daemon=True)
        start = time.perf_counter()
        started_at = time.time()

        def outcome(status: OutcomeStatus, result: Any, message: str) -> Outcome:
            return Outcome(
                status, result, message, time.perf_counter() - start, job.tag, local_node(), started_at, time.time()
            )

        process.start()
        sender.close()
        self._current = process
        try:
            deadline = None if job.timeout_s is None else start + job.timeout_s
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.perf_counter())
                if not receiver.poll(remaining):
                    process.kill()
                    process.join()
                    message = f"exceeded the time budget of {job.timeout_s:g} s"
                    yield outcome("timeout", None, message)
                    return
                try:
                    status, result, message = receiver.recv()
                except EOFError:
                    process.join()
                    status, message = _death(process.exitcode)
                    yield outcome(status, None, message)
                    return
                if status != "progress":
                    yield outcome(status, result, message)
                    return
                yield Progress(result, job.tag)
        finally:
            self._current = None
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join()


def _death(exitcode: int | None) -> tuple[OutcomeStatus, str]:
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig == signal.SIGKILL:
            return "oom", "worker killed by SIGKILL (not sent by attnbench): most likely the OOM killer"
        return "error", f"worker died from {sig.name}"
    return "error", f"worker exited with code {exitcode} without a result"
