"""What a sweep tells whoever watches it: plain events, rendered by the CLI (a sweep prints nothing itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PhaseStarted:
    """A sweep (or one part of it) begins: ``total`` cells will finish in it."""

    name: str
    total: int


@dataclass(frozen=True)
class CellStarted:
    label: str


@dataclass(frozen=True)
class CellProgress:
    """A running cell's report, e.g. ``{"step": 40, "steps": 300, "loss": 0.7, "val_acc": 0.5}``."""

    label: str
    info: dict[str, Any]


@dataclass(frozen=True)
class CellFinished:
    """A cell's row was appended (whatever its status)."""

    label: str
    row: dict[str, Any]


SweepEvent = PhaseStarted | CellStarted | CellProgress | CellFinished
OnEvent = Callable[[SweepEvent], None]


def ignore(event: SweepEvent) -> None:
    """The default watcher: nobody is looking."""
