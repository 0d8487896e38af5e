"""The length axis of tasks: a task spec at length n, and a check that every requested length is possible.

Each task's constructor applies its own scaling rule (:attr:`Task.length_scaling`) to the options left
unset, so the task at length n is simply its spec with ``seq_len=n``: options written in the spec (or in
the preset's spec) win, the rule sets the rest. :func:`check_task_lengths` builds the task at every
length a sweep asks for, so an impossible length is refused with the task's own one-line error before
anything trains.
"""

from __future__ import annotations

from collections.abc import Iterable

from attnbench.core.registry import SpecError
from attnbench.tasks.base import Task
from attnbench.tasks.registry import TASKS, task_class, task_spec_with


def task_spec_at_length(spec: str, seq_len: int) -> str:
    """The canonical spec of ``spec`` at length ``seq_len`` (its other options untouched)."""
    return task_spec_with(spec, seq_len=seq_len)


def task_at_length(spec: str, seq_len: int) -> Task:
    """The task of ``spec`` built at length ``seq_len``; :class:`SpecError` (one line) if it cannot take it."""
    full_spec = task_spec_at_length(spec, seq_len)
    parsed = TASKS.parse(full_spec)
    try:
        task = task_class(parsed.name)(**parsed.options)
    except (ValueError, TypeError) as err:
        base = task_spec_with(spec, seq_len=None)
        raise SpecError(f"task {base!r} cannot run at n = {seq_len}: {err}") from None
    task.spec = parsed.canonical
    return task


def check_task_lengths(spec: str, seq_lens: Iterable[int]) -> None:
    """Raise :class:`SpecError` naming the first length in ``seq_lens`` that ``spec`` cannot take."""
    for seq_len in seq_lens:
        task_at_length(spec, seq_len)


def length_scaling(spec_or_name: str) -> str:
    """How the named task's difficulty follows n, in one line (for ``attnbench list --tasks``)."""
    return task_class(spec_or_name.partition(":")[0]).length_scaling
