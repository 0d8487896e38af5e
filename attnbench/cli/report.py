"""`attnbench report`: plots and report.md again, from a run's result files alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnbench.cli.app import app
from attnbench.cli.console import console
from attnbench.cli.errors import user_errors
from attnbench.core.baseline import BASELINE


@app.command("report")
@user_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/<time>-<command>...).")],
    acc_tolerance: Annotated[
        float | None,
        typer.Option(min=0.0, help=f"Accuracy points below {BASELINE} a recommended variant may be."),
    ] = None,
) -> None:
    """Plots and report.md again, from the run's result files alone (nothing is re-measured)."""
    from attnbench.reporting.report import write_report

    path = write_report(run_dir, acc_tolerance=acc_tolerance)
    console.print(f"[bold green]report:[/] {path}")
