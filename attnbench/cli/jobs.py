"""What every measuring command does around its job: a session in the run directory, an executor, progress bars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from attnbench.cli.console import console
from attnbench.cli.progress import sweep_progress
from attnbench.execution.protocol import Executor
from attnbench.runs.rundir import RunDir
from attnbench.runs.session import session
from attnbench.sweeps.events import OnEvent

T = TypeVar("T")


def in_session(run_dir: RunDir, job: Callable[[Executor, OnEvent], T]) -> T:
    """Run ``job`` with the default executor, recorded as a session of ``run_dir`` (Ctrl-C marks it interrupted)."""
    from attnbench.execution.local import LocalExecutor

    executor = LocalExecutor()
    with session(run_dir, executor), sweep_progress() as on_event:
        return job(executor, on_event)


def finish(run_dir: Path, what: str) -> None:
    console.print(f"[bold]{what}[/] written to {run_dir}")
