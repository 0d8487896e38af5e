"""`attnbench compare`: two runs cell by cell, as Rich tables; exit 1 on a regression (usable in CI)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attnbench.cli.app import app
from attnbench.cli.console import console
from attnbench.cli.errors import user_errors
from attnbench.reporting.compare import Comparison, exponent_text
from attnbench.reporting.units import human_bytes, human_percent, human_ratio, human_seconds


def _style(regression: bool, verdict: str) -> str | None:
    if regression:
        return "bold red"
    if verdict:
        return "green"
    return None


def comparison_tables(cmp: Comparison) -> list[Table]:
    """Rich tables for the terminal: the regressions (if any), B/A per cell with regressions in red, then the
    cells in one run only. The environment warnings are in ``cmp.warnings`` for the caller to print first."""
    tables = []
    if cmp.regressions:
        table = Table(title=f"regressions of B ({cmp.run_b.name}) against A ({cmp.run_a.name})", title_justify="left")
        for column in ("kind", "cell", "A", "B", "change"):
            table.add_column(column)
        for r in cmp.regressions:
            table.add_row(r.kind, r.cell, r.a, r.b, r.change, style="bold red")
        tables.append(table)
    if len(cmp.complexity):
        table = Table(title=f"complexity: B ({cmp.run_b.name}) / A ({cmp.run_a.name})", title_justify="left")
        for column, justify in (("cell", "left"), ("time A", "right"), ("time B", "right"), ("B/A", "right"),
                                ("memory A", "right"), ("memory B", "right"), ("B/A", "right"),
                                ("verdict", "left")):  # fmt: skip
            table.add_column(column, justify=justify)
        for _, r in cmp.complexity.iterrows():
            ok = r["status_a"] == "ok" and r["status_b"] == "ok"
            table.add_row(
                r["cell"],
                human_seconds(r["time_median_s_a"]) if r["status_a"] == "ok" else str(r["status_a"]),
                human_seconds(r["time_median_s_b"]) if r["status_b"] == "ok" else str(r["status_b"]),
                human_ratio(r["time_ratio"]) if ok else "-",
                human_bytes(r["peak_mem_bytes_a"]) if r["status_a"] == "ok" else "-",
                human_bytes(r["peak_mem_bytes_b"]) if r["status_b"] == "ok" else "-",
                human_ratio(r["mem_ratio"]) if ok else "-",
                r["verdict"],
                style=_style(r["regression"], r["verdict"]),
            )
        tables.append(table)
    if len(cmp.exponents):
        table = Table(title="time exponents with 95% intervals (flagged only when they separate)",
                      title_justify="left")  # fmt: skip
        for column in ("variant", "A", "B", "verdict"):
            table.add_column(column)
        for _, r in cmp.exponents.iterrows():
            table.add_row(
                r["cell"], exponent_text(r["exponent_a"], r["exponent_low_a"], r["exponent_high_a"]),
                exponent_text(r["exponent_b"], r["exponent_low_b"], r["exponent_high_b"]), r["verdict"],
                style=_style(r["regression"], r["verdict"]),
            )  # fmt: skip
        tables.append(table)
    if len(cmp.accuracy):
        table = Table(title="accuracy: mean test accuracy over usable seeds", title_justify="left")
        for column, justify in (("cell", "left"), ("A", "right"), ("B", "right"), ("B − A (points)", "right"),
                                ("seeds A", "right"), ("seeds B", "right"), ("verdict", "left")):  # fmt: skip
            table.add_column(column, justify=justify)
        for _, r in cmp.accuracy.iterrows():
            delta = r["delta_points"]
            table.add_row(
                r["cell"], human_percent(r["test_mean_a"]), human_percent(r["test_mean_b"]),
                "-" if math.isnan(delta) else f"{delta:+.1f}",
                f"{r['seeds_ok_a']}/{r['seeds_run_a']}", f"{r['seeds_ok_b']}/{r['seeds_run_b']}", r["verdict"],
                style=_style(r["regression"], r["verdict"]),
            )  # fmt: skip
        tables.append(table)
    if len(cmp.not_comparable):
        table = Table(title="not comparable (in one run only)", title_justify="left")
        for column in ("kind", "cell", "present"):
            table.add_column(column)
        for _, r in cmp.not_comparable.iterrows():
            table.add_row(r["kind"], r["cell"], r["side"], style="yellow")
        tables.append(table)
    return tables


@app.command("compare")
@user_errors
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="The baseline run directory.")],
    run_b: Annotated[Path, typer.Argument(help="The run to check against it.")],
    fail_on: Annotated[
        float, typer.Option(min=0.0, help="Percent slower (beyond both cells' spread) or more memory = regression.")
    ] = 10.0,
    acc_drop: Annotated[float, typer.Option(min=0.0, help="Accuracy points lost that count as a regression.")] = 2.0,
) -> None:
    """Line up two runs cell by cell; exit 1 if B regressed against A (usable in CI)."""
    from attnbench.reporting.compare import compare_runs, comparison_summary

    comparison = compare_runs(run_a, run_b, fail_on=fail_on / 100, acc_drop=acc_drop)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for table in comparison_tables(comparison):
        console.print(table)
    console.print(comparison_summary(comparison))
    if comparison.has_regressions:
        raise typer.Exit(1)
