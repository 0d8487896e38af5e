"""What every executor runs in a cell's own process: load the cell's plugins, call its function, classify errors."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnbench.core.registry import load_plugin
from attnbench.execution.protocol import OutcomeStatus, Report

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc")


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure on any device: MemoryError, torch's OutOfMemoryError, or the CPU allocator's error."""
    return isinstance(err, MemoryError) or any(m in str(err).lower() for m in _OOM_MARKERS)


def classify_exception(err: BaseException) -> tuple[OutcomeStatus, str]:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    first = text[0] if text else type(err).__name__
    if is_out_of_memory(err):
        return "oom", first[:500]
    if isinstance(err, NotImplementedError):
        return "skipped", f"not supported here: {first[:500]}"
    return "error", first[:500]


def shipped_plugin(plugin: str) -> str:
    """A plugin file absent on this machine is imported by module name: Ray's runtime_env shipped it there."""
    path = Path(plugin)
    if path.suffix == ".py" and not path.exists():
        return path.stem
    return plugin


def run_cell(fn: Callable[[Any, Report], Any], cell: Any, report: Report) -> tuple[OutcomeStatus, Any, str]:
    """(status, typed result, message): never raises, so the parent always learns how the cell ended."""
    try:
        torch.set_flush_denormal(True)
        for plugin in getattr(cell, "plugins", ()):
            load_plugin(shipped_plugin(plugin))
        return "ok", fn(cell, report), ""
    except BaseException as err:
        status, message = classify_exception(err)
        where = traceback.extract_tb(err.__traceback__)
        if status == "error" and where:
            message += f" (at {os.path.basename(where[-1].filename)}:{where[-1].lineno})"
        return status, None, message
