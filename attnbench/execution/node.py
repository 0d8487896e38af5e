"""The machine a cell runs on, described where it runs: its name and hardware (for provenance)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def local_node() -> str:
    """This machine's name, as rows and the manifest record it."""
    return platform.node() or socket.gethostname() or "localhost"


def describe_node() -> dict[str, Any]:
    """Host, CPU model and count, GPU model (None without CUDA)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": local_node(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "gpu": gpu}
