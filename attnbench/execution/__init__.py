"""Execution: the Executor protocol and the executors (today: LocalExecutor, one forked child per cell)."""

from attnbench.execution.local import LocalExecutor
from attnbench.execution.protocol import Event, Executor, Outcome, OutcomeStatus, Progress, Report, run_one

__all__ = ["Event", "Executor", "LocalExecutor", "Outcome", "OutcomeStatus", "Progress", "Report", "run_one"]
