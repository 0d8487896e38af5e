"""What machine, software and code produced a result: recorded in every manifest."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import attnbench
from attnbench.execution.node import cpu_model


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else total RAM."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return available_memory_bytes()


def git_commit() -> dict[str, Any]:
    """The commit of the attnbench checkout that is running (None outside a git checkout) and whether it is dirty."""
    root = Path(attnbench.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def environment(device: str, threads: int) -> dict[str, Any]:
    return {
        "attnbench_version": attnbench.__version__,
        "git": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
        "device_name": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "memory_available_bytes": available_memory_bytes(),
    }


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("cpu_model", "device_name", "cpu_count")
    return all(a.get(k) == b.get(k) for k in keys)
