"""Cells on a Ray cluster: one long-lived actor per node runs each cell in that node's forkserver child.

Ray only carries cells to nodes and results back; a cell still runs exactly as under
:class:`~attnbench.execution.local.LocalExecutor` (a fresh child forked from a server that imported torch),
so its memory reading is its own and an out-of-memory kill takes only that child. Which cells may run
side by side is decided here, per node, before a cell is sent:

- a CPU timing or memory cell (anything that is not ``shares_node``) holds its node alone;
- an accuracy cell (``shares_node``) takes ``threads`` of the node's CPUs, next to other accuracy cells;
- a CUDA cell takes one of the node's GPUs.

Faults are attnbench's: actor calls are never retried by Ray; a cell whose node or actor was lost is run
again (``retries`` times), anything else is the cell's result (``error``, ``oom``, ``timeout``).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnbench.core.errors import UserError
from attnbench.execution.protocol import DEFAULT_RETRIES, Event, Outcome, Report

INSTALL_HINT = "--executor ray needs Ray: pip install 'attnbench[ray]' (or pip install 'ray>=2.9')"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


def runtime_env(plugins: Sequence[str]) -> dict[str, Any]:
    """What a node needs to run cells: this attnbench and the --plugin files, shipped by Ray (for ``ray.init``)."""
    modules = [str(Path(__file__).resolve().parents[1])]  # the attnbench package
    modules += [str(Path(p).resolve()) for p in plugins if Path(p).is_file()]
    return {"py_modules": modules}


class NodeWorker:
    """The actor on one node: runs each cell through the same forkserver child as the local executor."""

    def describe(self, plugins: Sequence[str]) -> dict[str, Any]:
        """The node's name and hardware; importing attnbench and the plugins here surfaces a node that can't."""
        from attnbench.core.registry import load_plugin
        from attnbench.execution.node import describe_node
        from attnbench.execution.worker import shipped_plugin

        for plugin in plugins:
            load_plugin(shipped_plugin(plugin))
        return describe_node()

    def run(self, fn: Callable[[Any, Report], Any], cell: Any, timeout_s: float | None, gpu: int | None) -> Outcome:
        from attnbench.execution.local import LocalExecutor
        from attnbench.execution.protocol import run_one

        if gpu is not None:
            return run_one(LocalExecutor(), run_on_gpu, OnGpu(fn, cell, gpu), timeout_s=timeout_s)
        return run_one(LocalExecutor(), fn, cell, timeout_s=timeout_s)


@dataclass(frozen=True)
class OnGpu:
    """A CUDA cell with the GPU it was given: its child sees that GPU alone, as ``cuda:0``."""

    fn: Callable[[Any, Report], Any]
    cell: Any
    gpu: int

    @property
    def plugins(self) -> tuple[str, ...]:
        return tuple(getattr(self.cell, "plugins", ()))


def run_on_gpu(job: OnGpu, report: Report) -> Any:
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = str(job.gpu)  # before the child's first CUDA call
    return job.fn(job.cell, report)


@dataclass
class _Node:
    node_id: str
    name: str
    cpus: int
    gpus: int
    actor: Any
    description: dict[str, Any] = field(default_factory=dict)
    free_cpus: int = 0
    free_gpus: list[int] = field(default_factory=list)  # indices of the GPUs no cell holds
    held_alone: bool = False
    cpu_cells: int = 0


@dataclass
class _Job:
    fn: Callable[[Any, Report], Any]
    cell: Any
    timeout_s: float | None
    tag: Any
    node: str | None
    attempts: int = 0


@dataclass
class _Running:
    job: _Job
    node: _Node
    cpus: int
    gpu: int | None
    alone: bool
    actor: Any = None  # the actor it was sent to: when it dies, only the first of its cells replaces it


def _slots(resources: dict[str, float]) -> int:
    return max(int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))


def _device(cell: Any) -> str:
    for holder in (cell, getattr(cell, "cell", None)):
        device = getattr(holder, "device", None)
        if isinstance(device, str):
            return device
    return "cpu"


class RayExecutor:
    """Runs cells on the nodes of a Ray cluster (``address``), or of a Ray instance it starts itself."""

    def __init__(
        self, address: str | None = None, *, retries: int = DEFAULT_RETRIES, plugins: Sequence[str] = ()
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self.retries = retries  # runs again of a cell whose node or worker was lost
        self._plugins = tuple(plugins)
        self._started_ray = False
        if not ray.is_initialized():  # else the caller's Ray job (and its runtime_env) is used as it is
            check_reachable(address)
            try:
                ray.init(
                    address=address, include_dashboard=False, log_to_driver=False, logging_level="error",
                    runtime_env=runtime_env(plugins),  # local paths ship only at the job level
                )  # fmt: skip
            except (ConnectionError, RuntimeError) as err:  # no cluster at that address
                message = (
                    f"--ray-address {address}: cannot connect to Ray ({_first_line(err)}); start it with `ray start`"
                )
                raise UserError(message) from None
            self._started_ray = True
        self._queue: deque[_Job] = deque()
        self._running: dict[Any, _Running] = {}
        self._nodes: dict[str, _Node] = {}
        self.lost_nodes: dict[str, str] = {}  # node name -> why it cannot run cells
        self._pending_notices: deque[str] = deque()
        usable = [i for i in ray.nodes() if i.get("Alive") and i.get("Resources", {}).get("CPU", 0) >= 1]
        started = [(i["NodeID"], i["Resources"], self._actor(i["NodeID"], _slots(i["Resources"]))) for i in usable]
        for node_id, resources, actor in started:  # started together: each imports torch once, in parallel
            self._add_node(node_id, resources, actor)
        if not self._nodes:
            why = f": {self._pending_notices[0]}" if self._pending_notices else ""
            raise UserError(f"the Ray cluster{f' at {address}' if address else ''} has no node that can run cells{why}")
        self.capacity = sum(max(n.cpus, n.gpus) for n in self._nodes.values())

    # the nodes -------------------------------------------------------------------------------------------
    def _actor(self, node_id: str, slots: int) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = self._ray.remote(NodeWorker).options(
            num_cpus=0,  # it only waits on its children; the cells' CPUs are accounted for here
            max_concurrency=slots + 1,
            max_restarts=0,
            max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        )
        return remote.remote()

    def _add_node(self, node_id: str, resources: dict[str, float], actor: Any) -> None:
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        try:
            description = self._ray.get(actor.describe.remote(self._plugins))
        except self._ray.exceptions.RayError as err:
            reason = _first_line(err)
            self.lost_nodes[node_id[:12]] = reason
            self._pending_notices.append(f"node {node_id[:12]} cannot run attnbench cells: {reason}")
            self._ray.kill(actor)
            return
        name = description["host"]
        if any(n.name == name for n in self._nodes.values()):
            name = f"{name}-{node_id[:8]}"
        self._nodes[node_id] = _Node(node_id, name, cpus, gpus, actor, description, cpus, list(range(gpus)))

    def nodes(self) -> list[str]:
        return [n.name for n in self._nodes.values()]

    def node_descriptions(self) -> dict[str, dict[str, Any]]:
        return {n.name: dict(n.description) for n in self._nodes.values()}

    # the protocol ----------------------------------------------------------------------------------------
    def submit(
        self,
        fn: Callable[[Any, Report], Any],
        cell: Any,
        *,
        timeout_s: float | None,
        tag: Any = None,
        node: str | None = None,
    ) -> None:
        self._queue.append(_Job(fn, cell, timeout_s, tag, node))

    def outcomes(self) -> Iterator[Event]:
        while self._queue or self._running:
            yield from self._dispatch()
            if not self._running:
                continue
            ready, _ = self._ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                running = self._running.pop(ref)
                self._release(running)
                outcome = self._collect(ref, running)
                if outcome is not None:
                    yield outcome

    def cancel(self) -> None:
        self._queue.clear()
        for ref in list(self._running):
            self._ray.cancel(ref, force=False)
        self._running.clear()
        for node in self._nodes.values():
            self._ray.kill(node.actor)  # its forkserver and children die with it
            node.actor = None

    def close(self) -> None:
        """End the actors and, when this executor started Ray, Ray itself."""
        for node in self._nodes.values():
            if node.actor is not None:
                self._ray.kill(node.actor)
        self._nodes.clear()
        if self._started_ray:
            self._ray.shutdown()

    # placement -------------------------------------------------------------------------------------------
    def _place(self, job: _Job) -> _Running | None:
        cuda = _device(job.cell).startswith("cuda")
        alone = not cuda and not getattr(job.cell, "shares_node", False)
        for node in self._nodes.values():
            if job.node is not None and node.name != job.node:
                continue
            if cuda:
                if node.free_gpus:
                    return _Running(job, node, 0, node.free_gpus[0], False)
                continue
            if node.held_alone:
                continue
            if alone:
                if node.cpu_cells == 0:
                    return _Running(job, node, node.cpus, None, True)
                continue
            cpus = min(max(1, int(getattr(job.cell, "threads", 1))), node.cpus)
            if node.free_cpus >= cpus:
                return _Running(job, node, cpus, None, False)
        return None

    def _dispatch(self) -> Iterator[Outcome]:
        while self._pending_notices and self._queue:  # a node that cannot import attnbench: said once
            job = self._queue.popleft()
            yield Outcome("error", None, self._pending_notices.popleft(), tag=job.tag)
        while self._queue:
            job = self._queue[0]
            if job.node is not None and job.node not in self.nodes():
                self._queue.popleft()
                yield Outcome("error", None, f"node {job.node} is no longer in the cluster", tag=job.tag)
                continue
            if not self._nodes:
                self._queue.popleft()
                yield Outcome("error", None, "no Ray node left that can run cells", tag=job.tag)
                continue
            running = self._place(job)
            if running is None:
                return  # in order: a measuring cell waits for its node rather than be overtaken
            self._queue.popleft()
            node = running.node
            node.free_cpus -= running.cpus
            if running.gpu is not None:
                node.free_gpus.remove(running.gpu)
            node.held_alone = running.alone
            node.cpu_cells += running.cpus > 0
            job.attempts += 1
            running.actor = node.actor
            self._running[node.actor.run.remote(job.fn, job.cell, job.timeout_s, running.gpu)] = running

    def _release(self, running: _Running) -> None:
        node = running.node
        node.free_cpus += running.cpus
        if running.gpu is not None:
            node.free_gpus.append(running.gpu)
        node.cpu_cells -= running.cpus > 0
        if running.alone:
            node.held_alone = False

    def _collect(self, ref: Any, running: _Running) -> Outcome | None:
        """The cell's outcome, or None when it was put back in the queue to run again."""
        exceptions = self._ray.exceptions
        job, node = running.job, running.node
        try:
            outcome: Outcome = self._ray.get(ref)
        except exceptions.OutOfMemoryError as err:  # Ray's memory monitor killed the actor: a result
            self._replace_actor(node, running.actor)
            return self._failed(job, node, "oom", f"killed by Ray's memory monitor on {node.name}: {_first_line(err)}")
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.NodeDiedError) as err:
            reason = _first_line(err)
            if "memory" in reason.lower() and "monitor" in reason.lower():
                self._replace_actor(node, running.actor)
                return self._failed(job, node, "oom", f"killed by Ray's memory monitor on {node.name}: {reason}")
            self._replace_actor(node, running.actor)
            if job.attempts <= self.retries:
                self._queue.appendleft(replace(job, node=job.node if job.node in self.nodes() else None))
                return None
            return self._failed(job, node, "error", f"lost its worker on {node.name} {job.attempts} times: {reason}")
        except exceptions.RayError as err:
            return self._failed(job, node, "error", f"Ray: {_first_line(err)}")
        return replace(outcome, tag=job.tag, node=node.name)

    def _failed(self, job: _Job, node: _Node, status: Any, message: str) -> Outcome:
        now = time.time()
        return Outcome(status, None, message, tag=job.tag, node=node.name, started_at=now, ended_at=now)

    def _replace_actor(self, node: _Node, dead: Any) -> None:
        """A new actor on a node whose actor died; a node that is gone leaves the pool."""
        if node.actor is not dead:
            return  # another of its cells already replaced it
        alive = {i["NodeID"] for i in self._ray.nodes() if i.get("Alive")}
        if node.node_id in alive:
            node.actor = self._actor(node.node_id, max(node.cpus, node.gpus))
            return
        self._nodes.pop(node.node_id, None)
        self.lost_nodes[node.name] = "node died"


def check_reachable(address: str | None) -> None:
    """A HOST:PORT nobody listens on fails in seconds here, not after Ray's own minutes of retries."""
    if address is None or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as err:
        raise UserError(
            f"--ray-address {address}: nothing answers there ({err}); start the head with `ray start --head` "
            "and pass the address it prints, or auto"
        ) from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
