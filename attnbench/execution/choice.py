"""Which executor a command runs its cells with: the one place that names them and builds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attnbench.core.errors import UserError
from attnbench.execution.protocol import DEFAULT_RETRIES, Executor

EXECUTORS = ("local", "ray")
DEFAULT_EXECUTOR = "local"


@dataclass(frozen=True)
class ExecutorChoice:
    """--executor, --ray-address, --retries (or a suite's ``[execution]``); ``ray_address`` None: start Ray."""

    executor: str = DEFAULT_EXECUTOR
    ray_address: str | None = None
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.retries < 0:
            raise UserError(f"--retries must be >= 0, got {self.retries}")
        if self.ray_address is not None and self.executor != "ray":
            raise UserError("--ray-address is for --executor ray: add --executor ray, or drop --ray-address")

    def build(self, plugins: Sequence[str] = ()) -> Executor:
        if self.executor == "ray":
            from attnbench.execution.ray_executor import RayExecutor

            return RayExecutor(self.ray_address, retries=self.retries, plugins=plugins)
        from attnbench.execution.local import LocalExecutor

        return LocalExecutor()


def node_descriptions(executor: Any) -> dict[str, dict[str, Any]]:
    """Each node's host and hardware by node name (what the manifest records of where cells ran)."""
    describe = getattr(executor, "node_descriptions", None)
    if describe is not None:
        return describe()
    from attnbench.execution.node import describe_node

    return {name: describe_node() for name in executor.nodes()}
