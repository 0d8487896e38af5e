"""Options several commands share, declared once as ``Annotated`` aliases, and the device check behind --device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnbench.cli.errors import fail
from attnbench.measure.stability import StabilityRules

Device = Annotated[str | None, typer.Option(help="cpu (default) or cuda.")]
Threads = Annotated[int | None, typer.Option(min=1, help="Default: torch's thread count.")]
Resume = Annotated[Path | None, typer.Option(help="Finish an interrupted run in this directory.")]
Out = Annotated[Path | None, typer.Option(help="Run directory (default results/<time>-<command>).")]
MaxCells = Annotated[int | None, typer.Option(hidden=True, min=1)]
ExecutorName = Annotated[
    str | None, typer.Option("--executor", help="Where cells run: local (default: this machine) or ray (Ray cluster).")
]
RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster to join (auto, or HOST:PORT); default: start a local Ray instance.")
]
Retries = Annotated[
    int | None, typer.Option(min=0, help="Runs of a cell again when its node or worker was lost (default 1).")
]
TrustPlugins = Annotated[
    bool,
    typer.Option(
        "--trust-plugins",
        help="With --resume: import the plugin files the run's manifest names (else pass them again with --plugin).",
    ),
]


def checked_device(device: str | None) -> str | None:
    """``None`` stays ``None`` (the config's default, or the resumed run's device); a bad one fails as one line."""
    if device is None:
        return None
    if device != "cpu" and not device.startswith("cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available on this machine", hint="use --device cpu")
    return device


Remeasure = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Re-measures of a suspect timing cell, each in a fresh worker later in the sweep "
        f"(default {StabilityRules().remeasure}; 0: none).",
    ),
]
