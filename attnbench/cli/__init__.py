"""The `attnbench` command line (Typer): one module per noun; Rich output lives only in this package.

User mistakes print one line (`error: ...`) and exit 2; a failed check or a regression exits 1.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from attnbench.cli import bench, compare, decode, report, run, variants  # noqa: F401  (each registers its commands)
from attnbench.cli.app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors also become one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        code: Any = command.main(args=argv, prog_name="attnbench", standalone_mode=False)
    except typer.Exit as err:
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = 130
    except Exception as err:
        # Click's (or Typer's vendored Click's) usage errors: duck-typed, so any Typer version works
        if not callable(getattr(err, "format_message", None)):
            raise
        ctx = getattr(err, "ctx", None)
        path = getattr(ctx, "command_path", "") or "attnbench"
        typer.echo(f"error: {err.format_message()} (see '{path} --help')", err=True)
        code = getattr(err, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)
