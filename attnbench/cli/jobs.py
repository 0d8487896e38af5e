"""What every measuring command does around its job: a session in the run directory, an executor, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from attnbench.cli.console import console
from attnbench.cli.progress import sweep_progress
from attnbench.execution.choice import ExecutorChoice, node_descriptions
from attnbench.execution.protocol import Executor
from attnbench.runs.rundir import RunDir
from attnbench.runs.session import session
from attnbench.sweeps.events import OnEvent

T = TypeVar("T")


def executor_choice(
    executor: str | None, ray_address: str | None, retries: int | None, suite: dict[str, Any] | None = None
) -> ExecutorChoice:
    """The command line's settings over the suite's ``[execution]`` keys over the defaults."""
    given = {"executor": executor, "ray_address": ray_address, "retries": retries}
    values = {k: v for k, v in (suite or {}).items() if v is not None}
    values |= {k: v for k, v in given.items() if v is not None}
    if ray_address is not None and executor is None:
        values["executor"] = "ray"  # --ray-address alone means Ray
    return ExecutorChoice(**values)


def in_session(
    run_dir: RunDir,
    job: Callable[[Executor, OnEvent], T],
    choice: ExecutorChoice | None = None,
    plugins: Sequence[str] = (),
) -> T:
    """Run ``job`` with the chosen executor, recorded as a session of ``run_dir`` (Ctrl-C marks it interrupted)."""
    choice = choice or ExecutorChoice()
    executor = choice.build(plugins)
    try:
        recorded = run_dir.read_manifest().get("executor") or {}
        nodes = dict(recorded.get("nodes") or {}) | node_descriptions(executor)
        run_dir.update_manifest(executor={"kind": choice.executor, "ray_address": choice.ray_address, "nodes": nodes})
        with session(run_dir, executor), sweep_progress() as on_event:
            return job(executor, on_event)
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()


def finish(run_dir: Path, what: str) -> None:
    console.print(f"[bold]{what}[/] written to {run_dir}")
