"""The task registry: ``@register_task("name")`` on a :class:`Task` subclass, spec strings like attention's.

Third-party packages add tasks through the entry-point group ``attnbench.task``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnbench.core.registry import Registry, SpecError, format_value, split_spec
from attnbench.tasks.base import Task

TASKS: Registry[Task] = Registry(kind="task", base=Task, entry_point_group="attnbench.task")
register_task: Callable[[str], Callable[[type[Task]], type[Task]]] = TASKS.register


def available_tasks() -> list[str]:
    """Registered task names, sorted."""
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    return TASKS.get(name)


def canonical_task_spec(spec: str) -> str:
    """Name plus non-default options, sorted: the identity of a task configuration in result files."""
    return TASKS.canonical(spec)


def create_task(spec: str | Task) -> Task:
    """Build a task from a spec string such as ``"mqar:pairs=16,seq_len=256"`` (a Task is returned as is)."""
    if isinstance(spec, Task):
        return spec
    parsed = TASKS.parse(spec)
    cls = TASKS.get(parsed.name)
    try:
        task = cls(**parsed.options)
    except (ValueError, TypeError) as err:
        raise SpecError(f"task {parsed.canonical!r}: {err}") from err
    task.spec = parsed.canonical
    return task


def task_spec_with(spec: str, **options: Any) -> str:
    """``spec`` with ``options`` set (``None`` removes an option), as a canonical spec."""
    name, raw = split_spec(spec)
    for key, value in options.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    text = name + (":" + ",".join(f"{k}={format_value(v)}" for k, v in raw.items()) if raw else "")
    return canonical_task_spec(text)
