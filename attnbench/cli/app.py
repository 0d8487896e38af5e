"""The Typer application and its global options; the commands register themselves from their own modules."""

from __future__ import annotations

from typing import Annotated

import typer

from attnbench import __version__
from attnbench.cli.errors import fail
from attnbench.core.errors import UserError
from attnbench.core.registry import ATTENTION, load_plugin

app = typer.Typer(
    name="attnbench",
    help="Which attention should I use at sequence length n? Measure time, memory, FLOPs and accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure variants: `complexity` (time/memory/FLOPs vs n), `accuracy` (training).")
app.add_typer(bench_app, name="bench")


def show_plugin_failures() -> None:
    for failure in ATTENTION.failures:
        typer.echo(f"warning: plugin {failure.name!r} ({failure.source}) was skipped: {failure.error}", err=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"attnbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import a module or a .py file that registers attention variants or tasks (repeatable).",
            metavar="MODULE_OR_FILE.py",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    try:
        for target in plugin or []:
            load_plugin(target)
    except UserError as err:
        fail(str(err))
