"""Cells for the Ray tests: importable by reference in the Ray actor and in its forkserver children."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Nap:
    """A cell that only waits: ``shares_node`` ones may run side by side, the others hold their node."""

    seconds: float
    shares_node: bool = True
    threads: int = 1


def nap(cell: Nap, report: Any) -> float:
    time.sleep(cell.seconds)
    return cell.seconds


@dataclass(frozen=True)
class KillOnce:
    """Kills the Ray actor running it (its worker) the first ``times`` times, while it runs; then succeeds."""

    marker: str
    times: int = 1


def kill_worker_once(cell: KillOnce, report: Any) -> str:
    marker = Path(cell.marker)
    kills = int(marker.read_text()) if marker.exists() else 0
    if kills < cell.times:
        marker.write_text(str(kills + 1))
        forkserver = os.getppid()
        actor = int(Path(f"/proc/{forkserver}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(actor, signal.SIGKILL)
        time.sleep(5)  # the cell is still "running" when its worker dies
    return "survived"
