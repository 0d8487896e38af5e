"""What `attnbench list --tasks` shows: every registered task with its options, presets and length scaling."""

from __future__ import annotations

import inspect
from typing import Any

from attnbench.core.registry import format_value, options_of
from attnbench.tasks import available_tasks, task_class
from attnbench.training.presets import PRESETS

GENERIC_PRESETS = ("quick", "standard")  # every task has these (get_preset derives them when it brings none)


def task_presets(name: str) -> list[str]:
    """The accuracy presets that cover the task ``name``: built-in ones, its own, and the generic two."""
    built_in = {preset for preset, by_task in PRESETS.items() if name in by_task}
    return sorted(built_in | set(task_class(name).presets) | set(GENERIC_PRESETS))


def task_catalogue() -> list[dict[str, Any]]:
    """One plain record per registered task (what `attnbench list --tasks` shows and `--json` prints)."""
    records = []
    for name in available_tasks():
        cls = task_class(name)
        records.append({
            "name": name,
            "model_kind": cls.model_kind,
            "options": [
                {"name": o.name, "type": o.type_name, "default": None if o.required else format_value(o.default)}
                for o in options_of(cls).values()
            ],
            "presets": task_presets(name),
            "length_scaling": cls.length_scaling,
            "doc": (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " "),
        })  # fmt: skip
    return records
