"""Rich output: the console and the summary tables printed at the end of a sweep."""

from __future__ import annotations

import math
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from attnbench.core.baseline import BASELINE
from attnbench.reporting.analysis import crossovers, longest_fit, scaling_exponents
from attnbench.reporting.units import human_bytes, human_seconds

# piped output (logs, CI) has no terminal width: wide enough that tables stay one row per variant
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _cell_text(row: pd.Series) -> str:
    if row["status"] != "ok":
        return f"[yellow]{row['status']}[/]"
    return f"{human_seconds(row['time_median_s'])} / {human_bytes(row['peak_mem_bytes'])}"


def complexity_tables(frame: pd.DataFrame) -> list[Table]:
    """Per scope × pass: variant × n with time / peak memory or the status; then exponents and crossovers."""
    tables = []
    if frame.empty:
        return tables
    lengths = sorted(frame["seq_len"].unique())
    for (scope, pass_), part in frame.groupby(["scope", "pass"], sort=False):
        table = Table(title=f"{scope} · {pass_}: median time / peak memory", title_justify="left")
        table.add_column("variant")
        for n in lengths:
            table.add_column(f"n={n}", justify="right")
        for spec, rows in part.groupby("spec", sort=True):
            by_n = rows.drop_duplicates("seq_len", keep="last").set_index("seq_len")
            table.add_row(spec, *(_cell_text(by_n.loc[n]) if n in by_n.index else "[dim]missing[/]" for n in lengths))
        tables.append(table)
    tables.append(exponent_table(frame))
    return tables


def exponent_table(frame: pd.DataFrame) -> Table:
    exps = scaling_exponents(frame)
    cross = crossovers(frame)
    fits = longest_fit(frame)
    table = Table(
        title="scaling exponents (robust log-log fit over the largest stable lengths) and crossovers",
        title_justify="left",
    )
    for column in ("variant", "scope", "pass", "time exp [95%] (r²)", "memory exp (r²)", "faster than softmax from n",
                   "longest ok n"):  # fmt: skip
        table.add_column(column)
    if exps.empty:
        return table
    for (spec, scope, pass_), part in exps.groupby(["spec", "scope", "pass"], sort=True):
        by_metric = part.set_index("metric")
        cells = []
        for metric in ("time_median_s", "peak_mem_bytes"):
            r = by_metric.loc[metric]
            text = "-" if math.isnan(r["exponent"]) else f"{r['exponent']:.2f} ({r['r2']:.3f})"
            if metric == "time_median_s" and not math.isnan(r["exponent"]) and not math.isnan(r["exponent_low"]):
                text = f"{r['exponent']:.2f} [{r['exponent_low']:.2f}, {r['exponent_high']:.2f}] ({r['r2']:.3f})"
                text += " [yellow]incl. unstable[/]" if r["uses_unstable"] else ""
            cells.append(text)
        match = (
            cross[(cross["spec"] == spec) & (cross["scope"] == scope) & (cross["pass"] == pass_)]
            if not cross.empty
            else cross
        )
        if spec == BASELINE:
            crossover = "baseline"
        elif match.empty or math.isnan(match["crossover_n"].iloc[0]):
            crossover = "not in range"
        else:
            crossover = f"{int(match['crossover_n'].iloc[0])}" + (" (all n)" if match["always_ahead"].iloc[0] else "")
        fit = fits[(fits["spec"] == spec) & (fits["scope"] == scope) & (fits["pass"] == pass_)]
        longest = "-" if fit.empty or math.isnan(fit["longest_ok_n"].iloc[0]) else str(int(fit["longest_ok_n"].iloc[0]))
        table.add_row(spec, scope, pass_, *cells, crossover, longest)
    return table


def accuracy_table(frame: pd.DataFrame) -> Table:
    """Task × variant: test accuracy (mean ± 95% interval over usable seeds), the majority rate, cost per step."""
    from attnbench.reporting.analysis import accuracy_spread

    table = Table(title="accuracy (best-validation checkpoint, test split)", title_justify="left")
    for column in ("task", "n", "variant", "seeds ok", "test acc", "majority", "val acc", "time/step", "failures"):
        table.add_column(column)
    for r in accuracy_spread(frame).itertuples(index=False):
        spread = "" if math.isnan(r.test_ci95) else f" ± {r.test_ci95:.3f}"
        test = "-" if math.isnan(r.test_mean) else f"{r.test_mean:.3f}{spread}"
        val = "-" if math.isnan(r.val_mean) else f"{r.val_mean:.3f}"
        table.add_row(
            str(r.task), str(r.seq_len), str(r.spec), f"{r.seeds_ok}/{r.seeds_run}", test, f"{r.majority_acc:.3f}",
            val, human_seconds(r.time_per_step_s), str(r.failures),
        )  # fmt: skip
    return table
