"""`attnbench list` and `attnbench check`: the registered variants, and the conformance kit on one of them."""

from __future__ import annotations

import json
import warnings
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from attnbench.cli.app import app, show_plugin_failures
from attnbench.cli.console import console
from attnbench.cli.errors import fail, user_errors
from attnbench.cli.options import checked_device
from attnbench.core.registry import attention_catalogue


@app.command("list")
@user_errors
def list_command(
    family: Annotated[str | None, typer.Option(help="Only this family (full, sparse, linear, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    tasks: Annotated[
        bool, typer.Option("--tasks", help="List the registered tasks instead: options, presets, scaling with n.")
    ] = False,
) -> None:
    """List the registered attention variants and their options (or, with --tasks, the tasks)."""
    if tasks:
        if family is not None:
            fail("--family filters attention variants, not tasks", hint="drop --family, or drop --tasks")
        _list_tasks(as_json)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plugin failures are reported below, once
        records = attention_catalogue(family)
    if family is not None and not records:
        families = sorted({r["family"] for r in attention_catalogue()})
        fail(f"no variants in family {family!r}", hint=f"families: {', '.join(families)}")
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        show_plugin_failures()
        return
    table = Table(title="attention variants", title_justify="left")
    for column in ("name", "family", "exact", "causal", "cross", "noncausal", "decode", "options (type = default)"):
        table.add_column(column)
    for r in records:
        options = ", ".join(f"{o['name']}: {o['type']} = {o['default']}" for o in r["options"]) or "-"
        cells = (r["name"], r["family"], _yes(r["exact"]), _yes(r["causal"]), _yes(r["cross"]), _yes(r["noncausal"]),
                 _yes(r["decode"]), options)  # fmt: skip
        table.add_row(*map(escape, cells))  # "list[int]" is not rich markup
    console.print(table)
    show_plugin_failures()


def _list_tasks(as_json: bool) -> None:
    from attnbench.training.catalogue import task_catalogue

    records = task_catalogue()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table(title="tasks", title_justify="left")
    for column in ("name", "model", "options (type = default)", "presets", "how it scales with n"):
        table.add_column(column, overflow="fold")
    for r in records:
        options = ", ".join(f"{o['name']}: {o['type']} = {o['default']}" for o in r["options"]) or "-"
        cells = (r["name"], r["model_kind"], options, ", ".join(r["presets"]), r["length_scaling"])
        table.add_row(*map(escape, cells))
    console.print(table)


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
    checked_device(device)
    report = check_attention(
        spec, seq_len=seq_len, head_dim=head_dim, num_heads=heads, batch=batch, seed=seed, device=device
    )
    table = Table(title=f"conformance: {report.spec}", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    styles = {"passed": "green", "failed": "bold red", "skipped": "yellow", "reported": "cyan"}
    for r in report.results:
        table.add_row(escape(r.name), f"[{styles[r.status]}]{r.status}[/]", escape(r.detail))
    console.print(table)
    if not report.passed:
        console.print(f"[bold red]{len(report.failures)} check(s) failed[/]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/]")
