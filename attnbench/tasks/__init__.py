"""Long-range tasks, registered by name like attention variants so a plugin can add one.

Every module in this package is imported here, so adding a task is adding a file with a
``@register_task("name")`` class.
"""

import importlib
import pkgutil

from attnbench.tasks.base import (
    CAUSAL_MODEL_KINDS,
    IGNORE_INDEX,
    ModelKind,
    Split,
    Task,
    TaskData,
    majority_accuracy,
)
from attnbench.tasks.lengths import check_task_lengths, length_scaling, task_at_length, task_spec_at_length
from attnbench.tasks.registry import (
    TASKS,
    available_tasks,
    canonical_task_spec,
    create_task,
    register_task,
    task_class,
    task_spec_with,
)

__all__ = [
    "CAUSAL_MODEL_KINDS",
    "IGNORE_INDEX",
    "TASKS",
    "ModelKind",
    "Split",
    "Task",
    "TaskData",
    "available_tasks",
    "canonical_task_spec",
    "check_task_lengths",
    "create_task",
    "length_scaling",
    "majority_accuracy",
    "register_task",
    "task_at_length",
    "task_class",
    "task_spec_at_length",
    "task_spec_with",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
