"""Worker processes: every measurement runs in a fresh child forked from a server with torch imported.

A fresh child per cell means a cell cannot disturb the next one's memory reading, an out-of-memory kill
takes only that child (children raise their own ``oom_score_adj``), and a cell over its time budget is
killed. Forking from a server that already imported torch keeps a child's start to ~10 ms.

This module is the executor seam: the sweeps hand it (kind, payload, timeout) and get an outcome back,
so a distributed executor can replace :class:`LocalExecutor` without touching them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal, Protocol

OutcomeStatus = Literal["ok", "oom", "timeout", "error", "skipped"]

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc")
_PRELOAD = ["attnbench.bench.worker_preload"]


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    result: Any = None
    message: str = ""
    elapsed_s: float = 0.0


ProgressCallback = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout_s: float | None,
        on_progress: ProgressCallback | None = None,
    ) -> Outcome: ...


def classify_exception(err: BaseException) -> tuple[OutcomeStatus, str]:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    first = text[0] if text else type(err).__name__
    if isinstance(err, MemoryError) or any(m in str(err).lower() for m in _OOM_MARKERS):
        return "oom", first[:500]
    if isinstance(err, NotImplementedError):
        return "skipped", f"not supported here: {first[:500]}"
    return "error", first[:500]


def _child(conn: Connection, kind: str, payload: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this child
    try:
        with open("/proc/self/oom_score_adj", "w") as f:  # be the OOM killer's first choice, not the parent
            f.write("1000")
    except OSError:
        pass

    def report(progress: dict[str, Any]) -> None:
        conn.send(("progress", progress, ""))

    try:
        from attnbench.bench.measure import run_in_worker

        result = run_in_worker(kind, payload, report)
        conn.send(("ok", result, ""))
    except BaseException as err:
        status, message = classify_exception(err)
        where = traceback.extract_tb(err.__traceback__)
        if status == "error" and where:
            message += f" (at {os.path.basename(where[-1].filename)}:{where[-1].lineno})"
        conn.send((status, None, message))
    finally:
        conn.close()


class LocalExecutor:
    """Runs each measurement in its own child process of a forkserver, one at a time."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._current: mp.process.BaseProcess | None = None

    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout_s: float | None,
        on_progress: ProgressCallback | None = None,
    ) -> Outcome:
        receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_child, args=(sender, kind, payload), daemon=True)
        start = time.perf_counter()
        process.start()
        sender.close()
        self._current = process
        try:
            return self._wait(process, receiver, timeout_s, start, on_progress)
        finally:
            self._current = None
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join()

    def _wait(
        self,
        process: mp.process.BaseProcess,
        receiver: Connection,
        timeout_s: float | None,
        start: float,
        on_progress: ProgressCallback | None,
    ) -> Outcome:
        deadline = None if timeout_s is None else start + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not receiver.poll(remaining):
                process.kill()
                process.join()
                message = f"exceeded the time budget of {timeout_s:g} s"
                return Outcome("timeout", None, message, time.perf_counter() - start)
            try:
                status, result, message = receiver.recv()
            except EOFError:
                process.join()
                return Outcome(*_death_outcome(process.exitcode), elapsed_s=time.perf_counter() - start)
            if status != "progress":
                return Outcome(status, result, message, time.perf_counter() - start)
            if on_progress is not None:
                on_progress(result)

    def stop(self) -> None:
        """End the running child (used on Ctrl-C)."""
        process = self._current
        if process is not None and process.is_alive():
            process.kill()


def _death_outcome(exitcode: int | None) -> tuple[OutcomeStatus, None, str]:
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig == signal.SIGKILL:
            return "oom", None, "worker killed by SIGKILL (not sent by attnbench): most likely the OOM killer"
        return "error", None, f"worker died from {sig.name}"
    return "error", None, f"worker exited with code {exitcode} without a result"
