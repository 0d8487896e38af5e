"""The `attnbench` command line: thin commands that parse options, call a plain function and print.

User mistakes print one line (`error: ...`) and exit 2; a failed check or a regression exits 1.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from attnbench import __version__
from attnbench.core.errors import UserError
from attnbench.core.registry import ATTENTION, attention_catalogue, load_plugin

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="attnbench",
    help="Which attention should I use at sequence length n? Measure time, memory, FLOPs and accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure variants: `complexity` (time/memory/FLOPs vs n), `accuracy` (training).")
app.add_typer(bench_app, name="bench")

console = Console(highlight=False)


def fail(message: str, *, hint: str | None = None, code: int = 2) -> NoReturn:
    """Print one plain line (never wrapped, no traceback) and exit."""
    typer.echo(f"error: {message}" + (f" ({hint})" if hint else ""), err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the user's mistakes (UserError) into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(str(err))

    return wrapper


def _show_plugin_failures() -> None:
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


@app.command("list")
@user_errors
def list_command(
    family: Annotated[str | None, typer.Option(help="Only this family (full, sparse, linear, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered attention variants and their options."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plugin failures are reported below, once
        records = attention_catalogue(family)
    if family is not None and not records:
        families = sorted({r["family"] for r in attention_catalogue()})
        fail(f"no variants in family {family!r}", hint=f"families: {', '.join(families)}")
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        _show_plugin_failures()
        return
    table = Table(title="attention variants", title_justify="left")
    for column in ("name", "family", "exact", "causal", "cross", "options (type = default)"):
        table.add_column(column)
    for r in records:
        options = ", ".join(f"{o['name']}: {o['type']} = {o['default']}" for o in r["options"]) or "-"
        table.add_row(r["name"], r["family"], _yes(r["exact"]), _yes(r["causal"]), _yes(r["cross"]), options)
    console.print(table)
    _show_plugin_failures()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@app.command("check")
@user_errors
def check_command(
    spec: Annotated[str, typer.Argument(help="Variant spec, e.g. 'window:radius=8,block=16'.")],
    seq_len: Annotated[int, typer.Option(min=2, help="Sequence length of the checks.")] = 70,
    head_dim: Annotated[int, typer.Option(min=1)] = 8,
    heads: Annotated[int, typer.Option(min=1)] = 2,
    batch: Annotated[int, typer.Option(min=2, help="At least 2: one item is fully masked.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Run the conformance kit on one variant; exit 1 if any check fails."""
    from attnbench.core.registry import create_attention
    from attnbench.testing import check_attention

    create_attention(spec, head_dim=head_dim, num_heads=heads)  # a bad spec fails here, as one line
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available on this machine", hint="use --device cpu")
    elif device != "cpu":
        fail(f"--device must be cpu or cuda, got {device!r}")
    report = check_attention(
        spec, seq_len=seq_len, head_dim=head_dim, num_heads=heads, batch=batch, seed=seed, device=device
    )
    table = Table(title=f"conformance: {report.spec}", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    styles = {"passed": "green", "failed": "bold red", "skipped": "yellow", "reported": "cyan"}
    for r in report.results:
        table.add_row(r.name, f"[{styles[r.status]}]{r.status}[/]", r.detail)
    console.print(table)
    if not report.passed:
        console.print(f"[bold red]{len(report.failures)} check(s) failed[/]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/]")


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
