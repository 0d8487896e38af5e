"""The decode and layer-breakdown figures: functions of result DataFrames returning matplotlib Figures.

Built like :mod:`attnbench.reporting.plots` (plain ``Figure`` objects, never pyplot; the run's palette).
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter

from attnbench.reporting.analysis import ok_rows
from attnbench.reporting.decode_analysis import decode_slopes
from attnbench.reporting.plots import LEGEND, PANEL_SIZE, Palette

MIB = 2**20
DECODE_METRICS = {  # column → (axis label, scale)
    "decode_median_s": ("per-token latency (ms)", 1e3),
    "state_bytes": ("state in use (MiB)", 1 / MIB),
}


def _log2_ticks(ax: object, values: pd.Series, label: str) -> None:
    ax.set_xscale("log", base=2)  # type: ignore[attr-defined]
    ticks = sorted({float(v) for v in values})
    ax.xaxis.set_major_locator(FixedLocator(ticks))  # type: ignore[attr-defined]
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # type: ignore[attr-defined]
    ax.xaxis.set_minor_locator(NullLocator())  # type: ignore[attr-defined]
    ax.set_xlabel(label)  # type: ignore[attr-defined]


def decode_figure(decode: pd.DataFrame, colors: Palette) -> Figure:
    """Per-token latency and state bytes against context, log–log, one line per spec × batch, slope in the legend."""
    rows = ok_rows(decode).drop_duplicates(["spec", "batch", "context"], keep="last")
    fig = Figure(figsize=(PANEL_SIZE[0], PANEL_SIZE[1] * 2))
    axes = fig.subplots(2, 1, squeeze=False, gridspec_kw={"hspace": 0.45})[:, 0]
    slopes = decode_slopes(rows, tuple(DECODE_METRICS))
    slope_of = {(r["spec"], int(r["batch"]), r["metric"]): r["exponent"] for _, r in slopes.iterrows()}
    several_batches = rows["batch"].nunique() > 1
    for ax, (metric, (name, scale)) in zip(axes, DECODE_METRICS.items(), strict=True):
        for (spec, batch), series in rows.groupby(["spec", "batch"], sort=True):
            series = series[series[metric] > 0].sort_values("context")
            slope = slope_of.get((spec, int(batch), metric), math.nan)
            label = f"{spec} (b={batch})" if several_batches else str(spec)
            shown = abs(slope) if abs(slope) < 0.005 else slope  # a flat fit may land a rounding error below 0
            label += " (slope n/a)" if math.isnan(slope) else f" (slope {shown:.2f})"
            ax.plot(series["context"], series[metric] * scale, marker="o", markersize=4,
                    color=colors.get(str(spec), (0.3, 0.3, 0.3, 1.0)), label=label)  # fmt: skip
        if not rows.empty:
            _log2_ticks(ax, rows["context"], "context c (tokens)")
        ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.set_title(f"decode: {name.split(' (')[0]} vs context (log–log)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(**LEGEND)
    return fig


def layer_share_figure(shares: pd.DataFrame, colors: Palette) -> Figure:
    """Attention's share of the layer's time against n, one panel per pass; 50% is where it overtakes the rest."""
    passes = sorted(str(p) for p in shares["pass"].unique()) or ["fwd"]
    fig = Figure(figsize=(PANEL_SIZE[0], PANEL_SIZE[1] * len(passes)))
    axes = fig.subplots(len(passes), 1, squeeze=False, gridspec_kw={"hspace": 0.45})[:, 0]
    several_causal = shares["causal"].nunique() > 1
    for ax, pass_ in zip(axes, passes, strict=True):
        part = shares[shares["pass"] == pass_]
        for (spec, causal), series in part.groupby(["spec", "causal"], sort=True):
            series = series.sort_values("seq_len")
            label = f"{spec} (causal)" if several_causal and str(causal) == "True" else str(spec)
            ax.plot(series["seq_len"], series["time_share"], marker="o", markersize=4,
                    color=colors.get(str(spec), (0.3, 0.3, 0.3, 1.0)), label=label)  # fmt: skip
        ax.axhline(0.5, color="0.4", linestyle=":", linewidth=1, label="attention = rest of layer")
        if not part.empty:
            _log2_ticks(ax, part["seq_len"], "sequence length n (tokens)")
        top = float(part["time_share"].max()) if not part.empty else 1.0
        ax.set_ylim(0, max(1.0, 1.05 * top))  # a share above 100% (timing noise) stays in view
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("attention's share of layer time")
        ax.set_title(f"layer breakdown · {pass_}: attention's share of the layer's time vs n")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(**LEGEND)
    return fig
