"""The report's figures: each a function of result DataFrames that returns a matplotlib Figure.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot: they render with Agg on a
headless machine, leave no global figure state behind, and do not switch the backend of a notebook that
imports this module. A palette built once from every spec in a run (:func:`palette`) is passed to every
plot, so a variant keeps its colour across the whole report. Legends sit outside the axes; :func:`save_figure`
writes PNG and SVG cropped to the drawn area so they are kept whole.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, LogLocator, NullLocator, PercentFormatter
from matplotlib.transforms import blended_transform_factory

from attnbench.reporting.analysis import accuracy_spread, ok_rows, pareto_front, scaling_exponents, stable_mask
from attnbench.reporting.units import human_seconds

Color = tuple[float, float, float, float]
Palette = Mapping[str, Color]

PASSES = ("fwd", "fwd+bwd")
PASS_TITLES = {"fwd": "forward", "fwd+bwd": "forward + backward"}
MIB = 2**20
FAIL_MARKER = "x"
FAIL_ROW = 0.06  # axes fraction per row of failure markers at the bottom of a panel
PANEL_SIZE = (7.5, 3.8)  # inches per stacked panel; legends go to the right of it
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small", "frameon": False}


def palette(specs: Iterable[str]) -> dict[str, Color]:
    """One colour per spec, assigned in sorted order: the same run always gets the same colours."""
    names = sorted({str(s) for s in specs})
    # tab10, then Dark2 and Set1: tab20 would pair each colour with a lighter shade of itself
    distinct = [*mpl.colormaps["tab10"].colors, *mpl.colormaps["Dark2"].colors, *mpl.colormaps["Set1"].colors]
    if len(names) <= len(distinct):
        return {name: (*distinct[i][:3], 1.0) for i, name in enumerate(names)}
    cmap = mpl.colormaps["turbo"]
    return {name: cmap(x) for name, x in zip(names, np.linspace(0.05, 0.95, len(names)), strict=True)}


def save_figure(fig: Figure, directory: Path, name: str, *, dpi: int = 150) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` under ``directory``, cropped to what is drawn (outside legends
    included); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    # the tight box is computed once for both files: bbox_inches="tight" would lay the figure out per file
    bbox = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(0.1)
    paths = [directory / f"{name}.png", directory / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches=bbox)
    return paths


# shared pieces -------------------------------------------------------------------------------------------
def _color(colors: Palette, spec: str) -> Color:
    return colors.get(spec, (0.3, 0.3, 0.3, 1.0))


def _stacked(rows: int, *, width: float = PANEL_SIZE[0], height: float = PANEL_SIZE[1]) -> tuple[Figure, list[Axes]]:
    """Panels one above the other, each legend to its right (no layout engine: bbox_inches="tight" on save
    keeps the outside legends, and skipping the engine halves the drawing time)."""
    fig = Figure(figsize=(width, height * rows))
    axes = fig.subplots(rows, 1, squeeze=False, gridspec_kw={"hspace": 0.45})[:, 0]
    return fig, list(axes)


class _ReadableLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written by ``text`` (0.03, 50, 10 µs) instead of 3e-02."""

    def __init__(self, text: Callable[[float], str] = "{:g}".format, **options: Any) -> None:
        super().__init__(**options)
        self._text = text

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return self._text(x)


def _readable_log_axis(axis: Any, text: Callable[[float], str] = "{:g}".format, values: Any = ()) -> None:
    """Plain tick labels on a log axis; minor ticks are labelled too when it spans less than a decade."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and np.log10(values.max() / values.min()) < 1:
        # a narrow range just above a power of ten (0.8 to 1.6, say) has no 2..9 tick inside it to label
        axis.set_minor_locator(LogLocator(subs=(1.2, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)))
    axis.set_major_formatter(_ReadableLogFormatter(text))
    axis.set_minor_formatter(_ReadableLogFormatter(text, labelOnlyBase=False))


def _length_axis(ax: Axes, lengths: Iterable[float]) -> None:
    """A log2 x axis ticked at the measured lengths, written as plain numbers (256, not 2^8)."""
    ax.set_xscale("log", base=2)
    ticks = sorted({float(n) for n in lengths})
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("sequence length n (tokens)")


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(6, 2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return fig


def _latest(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per cell: a resumed run may have re-measured a cell, and the last row is the one that counts."""
    return frame.drop_duplicates([k for k in keys if k in frame.columns], keep="last")


def _passes(frame: pd.DataFrame) -> list[str]:
    present = [str(p) for p in frame["pass"].dropna().unique()]
    return [p for p in PASSES if p in present] + sorted(p for p in present if p not in PASSES)


def _series_label(spec: str, causal: object, several_causal: bool) -> str:
    return f"{spec} (causal)" if several_causal and _truthy(causal) else spec


def _truthy(value: object) -> bool:
    return str(value).lower() in ("true", "1")


def _mark_failures(ax: Axes, failures: pd.DataFrame, colors: Palette) -> int:
    """An ``x`` per failed or skipped cell at its n, in a strip along the bottom, labelled with the status.

    Each spec gets its own row of the strip so markers of different specs at one n never overlap; returns
    the number of rows used.
    """
    if failures.empty:
        return 0
    strip = blended_transform_factory(ax.transData, ax.transAxes)
    specs = sorted(failures["spec"].unique())
    # a shaded band so the markers do not read as measurements at the y value they happen to sit on
    ax.add_patch(Rectangle((0, 0), 1, FAIL_ROW * (len(specs) + 0.3), transform=ax.transAxes, color="0.94", zorder=0,
                           linewidth=0))  # fmt: skip
    for row, spec in enumerate(specs):
        y = FAIL_ROW * (row + 0.7)
        for _, cell in failures[failures["spec"] == spec].sort_values("seq_len").iterrows():
            ax.plot([cell["seq_len"]], [y], marker=FAIL_MARKER, markersize=7, markeredgewidth=2, linestyle="none",
                    color=_color(colors, spec), transform=strip, clip_on=False,
                    label=f"_failed {spec} n={cell['seq_len']} {cell['status']}")  # fmt: skip
            ax.annotate(str(cell["status"]), (cell["seq_len"], y), xycoords=strip, xytext=(5, 0),
                        textcoords="offset points", va="center", fontsize=7, color=_color(colors, spec))  # fmt: skip
    return len(specs)


def _leave_room_below(ax: Axes, values: pd.Series, strip_rows: int) -> None:
    """Lower the bottom of a log y axis so the data sit above the strip of failure markers."""
    values = values[values > 0]
    if not strip_rows or values.empty:
        return
    lo, hi = math.log10(values.min()) - 0.1, math.log10(values.max()) + 0.1
    strip = FAIL_ROW * (strip_rows + 0.5)
    ax.set_ylim(10 ** (hi - (hi - lo) / (1 - strip)), 10**hi)


def _failure_legend_handle() -> Line2D:
    return Line2D([], [], marker=FAIL_MARKER, color="0.4", linestyle="none", markeredgewidth=2,
                  label="failed / skipped cell (status)")  # fmt: skip


# complexity ----------------------------------------------------------------------------------------------
METRICS: dict[str, tuple[str, str, float]] = {  # metric: (name, unit on the axis label, scale)
    "time_median_s": ("median time per call", "log scale", 1.0),  # the tick labels carry the unit (µs, ms, s)
    "peak_mem_bytes": ("peak memory", "MiB", 1 / MIB),
    "gflops_per_s": ("achieved throughput", "GFLOP/s", 1.0),
}
TICK_TEXT: dict[str, Callable[[float], str]] = {"time_median_s": human_seconds}


def scaling_figure(complexity: pd.DataFrame, colors: Palette, *, metric: str = "time_median_s",
                   scope: str = "attention") -> Figure:  # fmt: skip
    """``metric`` against n on log-log axes, one panel per pass, the fitted slope in each legend entry.

    The slope is :func:`attnbench.reporting.analysis.scaling_exponents`' (the largest ok lengths); failed or
    skipped cells are an ``x`` at their n along the bottom of the panel, labelled with their status.
    """
    name, unit, scale = METRICS[metric]
    frame = _latest(complexity[complexity["scope"] == scope], ["spec", "pass", "causal", "seq_len"])
    if frame.empty:
        return _empty(f"no {scope} cells in complexity.csv")
    exponents = scaling_exponents(frame, metrics=(metric,))
    slope_of = {
        (r["spec"], r["pass"], str(r["causal"])): r["exponent"] for _, r in exponents.iterrows()
    } if not exponents.empty else {}  # fmt: skip
    several_causal = frame["causal"].nunique() > 1
    passes = _passes(frame)
    fig, axes = _stacked(len(passes))
    for ax, pass_ in zip(axes, passes, strict=True):
        part = frame[frame["pass"] == pass_]
        unstable_drawn = False
        for (spec, causal), series in part.groupby(["spec", "causal"], sort=True):
            ran = ok_rows(series).sort_values("seq_len")
            ok = ran[ran[metric] > 0]  # log axes: a zero (below the meter's resolution) cannot be drawn
            slope = slope_of.get((spec, pass_, str(causal)), math.nan)
            label = _series_label(spec, causal, several_causal)
            if ran.empty:
                label += " (no ok cell)"
            elif ok.empty:
                label += " (every reading 0)"
            else:
                label += " (slope n/a)" if math.isnan(slope) else f" (slope {slope:.2f})"
            ax.plot(ok["seq_len"], ok[metric] * scale, marker="o", markersize=4, color=_color(colors, spec),
                    linestyle="--" if several_causal and _truthy(causal) else "-", label=label)  # fmt: skip
            shaky = ok[~stable_mask(ok)]  # unstable timings: hollow, out of the fitted slope
            if metric == "time_median_s" and not shaky.empty:
                ax.plot(shaky["seq_len"], shaky[metric] * scale, linestyle="none", marker="o", markersize=7,
                        markerfacecolor="white", markeredgecolor=_color(colors, spec), zorder=3)  # fmt: skip
                unstable_drawn = True
        failed = part[part["status"] != "ok"]
        rows = _mark_failures(ax, failed, colors)
        _length_axis(ax, part["seq_len"])
        values = ok_rows(part)[metric]
        values = values[values > 0] * scale
        if values.empty:  # e.g. memory of tiny cells, all below the meter's resolution
            ax.text(0.5, 0.5, f"every ok {name} reading is 0 (below the meter's resolution)",
                    transform=ax.transAxes, ha="center", va="center")  # fmt: skip
            ax.set_ylim(1, 10)
        ax.set_yscale("log")
        _readable_log_axis(ax.yaxis, TICK_TEXT.get(metric, "{:g}".format), values)
        _leave_room_below(ax, values, rows)
        ax.set_ylabel(f"{name} ({unit})")
        ax.set_title(f"{scope} · {PASS_TITLES.get(pass_, pass_)}: {name} vs n (log–log)")
        ax.grid(True, which="major", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        extra = [_failure_legend_handle()] if rows else []
        if unstable_drawn:
            extra.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="gray",
                                label="hollow: unstable timing (left out of the slope)"))  # fmt: skip
        ax.legend(handles=handles + extra, **LEGEND)
    return fig


def gflops_figure(complexity: pd.DataFrame, colors: Palette, *, peak_gflops: float | None,
                  scope: str = "attention") -> Figure:  # fmt: skip
    """Achieved GFLOP/s (analytic FLOPs / median time) against n, one panel per pass, with the matmul peak."""
    frame = _latest(complexity[complexity["scope"] == scope], ["spec", "pass", "causal", "seq_len"])
    if frame.empty:
        return _empty(f"no {scope} cells in complexity.csv")
    several_causal = frame["causal"].nunique() > 1
    passes = _passes(frame)
    fig, axes = _stacked(len(passes))
    for ax, pass_ in zip(axes, passes, strict=True):
        part = ok_rows(frame[frame["pass"] == pass_])
        for (spec, causal), series in part.groupby(["spec", "causal"], sort=True):
            series = series[series["gflops_per_s"] > 0].sort_values("seq_len")
            ax.plot(series["seq_len"], series["gflops_per_s"], marker="o", markersize=4, color=_color(colors, spec),
                    linestyle="--" if several_causal and _truthy(causal) else "-",
                    label=_series_label(spec, causal, several_causal))  # fmt: skip
        if peak_gflops and peak_gflops > 0:
            ax.axhline(peak_gflops, color="black", linestyle=":", linewidth=1.5,
                       label=f"matmul peak ({peak_gflops:.1f} GFLOP/s)")  # fmt: skip
        _length_axis(ax, frame[frame["pass"] == pass_]["seq_len"])
        ax.set_yscale("log")
        _readable_log_axis(ax.yaxis)
        ax.set_ylabel("achieved GFLOP/s (analytic FLOPs / time)")
        ax.set_title(f"{scope} · {PASS_TITLES.get(pass_, pass_)}: throughput vs n")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(**LEGEND)
    return fig


# accuracy ------------------------------------------------------------------------------------------------
def _task_label(task: str, seq_len: object) -> str:
    return f"{task}\n(n={int(seq_len)})" if pd.notna(seq_len) else str(task)


def accuracy_figure(accuracy: pd.DataFrame, colors: Palette) -> Figure:
    """Grouped bars: test accuracy per task × spec (mean over usable seeds, error bar = min–max over seeds).

    The majority-class baseline of each task is a dashed line across its group; a spec with no usable seed
    gets an ``x`` at zero labelled with its failure.
    """
    summary = accuracy_spread(accuracy)
    if summary.empty:
        return _empty("no accuracy results")
    tasks = summary[["task", "seq_len"]].drop_duplicates().sort_values(["task", "seq_len"])
    width_in = max(6.0, 1.0 + 0.35 * len(summary))
    fig = Figure(figsize=(width_in, 4.5))
    ax = fig.add_subplot()
    seen: set[str] = set()
    ticks, labels = [], []
    for i, (task, seq_len) in enumerate(tasks.itertuples(index=False)):
        group = summary[(summary["task"] == task) & (summary["seq_len"] == seq_len)].sort_values("spec")
        width = 0.8 / len(group)
        for j, row in enumerate(group.itertuples(index=False)):
            x = i - 0.4 + width * (j + 0.5)
            color = _color(colors, row.spec)
            if row.seeds_ok == 0:
                ax.plot([x], [0.0], marker=FAIL_MARKER, markersize=8, markeredgewidth=2, color=color,
                        linestyle="none", clip_on=False, label=f"_failed {row.spec} {task}")  # fmt: skip
                ax.annotate(row.failures or "no result", (x, 0.0), xytext=(0, 6), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize=7, color=color)  # fmt: skip
                continue
            spread = None
            if row.seeds_ok >= 2:
                spread = [[row.test_mean - row.test_min], [row.test_max - row.test_mean]]
            ax.bar(x, row.test_mean, width=width * 0.9, color=color, yerr=spread, capsize=3,
                   label=row.spec if row.spec not in seen else f"_{row.spec}")  # fmt: skip
            seen.add(row.spec)
        majority = group["majority_acc"].dropna()
        if not majority.empty:
            ax.hlines(majority.mean(), i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label="majority-class baseline" if i == 0 else "_majority")  # fmt: skip
        ticks.append(i)
        labels.append(_task_label(task, seq_len))
    ax.set_xticks(ticks, labels)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("task (training length)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy per task (bar: mean over seeds; error bar: min–max)")
    ax.grid(True, axis="y", alpha=0.3)
    handles = {label: handle for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    for spec in sorted(set(summary["spec"]) - seen):
        handles[spec] = Line2D([], [], marker=FAIL_MARKER, linestyle="none", markeredgewidth=2,
                               color=_color(colors, spec), label=f"{spec} (no usable seed)")  # fmt: skip
    order = [*sorted(k for k in handles if k != "majority-class baseline"), "majority-class baseline"]
    ax.legend(handles=[handles[k] for k in order if k in handles], **LEGEND)
    return fig


def bucket_start(label: object) -> float:
    """The leading number of a distance bucket: ``"16-31"`` → 16, ``"1"`` → 1, ``8`` → 8."""
    text = str(label).strip()
    head = text.split("-", 1)[0] if not text.startswith("-") else text
    try:
        return float(head)
    except ValueError:
        return math.inf


def distance_figure(by_distance: pd.DataFrame, colors: Palette) -> Figure:
    """Test accuracy by key–query distance bucket, one line per spec, one panel per task (MQAR first) and
    length (a task run at two lengths gets two panels, not one pooled).

    Seeds are pooled: a bucket's accuracy is over every query in it, across seeds.
    """
    if by_distance.empty:
        return _empty("no accuracy_by_distance.csv rows")
    frame = by_distance.assign(
        bucket=by_distance["distance_bucket"].astype(str),
        hits=by_distance["acc"].astype(float) * by_distance["n"].astype(float),
        panel=_panels(by_distance),
    )
    # panels in task order (MQAR first), then by training length; -1: a row without its length (older runs)
    length = pd.to_numeric(frame["seq_len"], errors="coerce").fillna(-1) if "seq_len" in frame.columns else -1
    frame = frame.assign(length=length)
    order = sorted(frame[["task", "length", "panel"]].drop_duplicates().itertuples(index=False),
                   key=lambda r: (not str(r.task).startswith("mqar"), str(r.task), r.length))  # fmt: skip
    tasks = list(dict.fromkeys(r.panel for r in order))
    fig, axes = _stacked(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        part = frame[frame["panel"] == task]
        buckets = sorted(part["bucket"].unique(), key=bucket_start)
        position = {b: i for i, b in enumerate(buckets)}
        pooled = part.groupby(["spec", "bucket"], sort=True)[["hits", "n"]].sum().reset_index()
        pooled["acc"] = pooled["hits"] / pooled["n"]
        for spec, series in pooled.groupby("spec", sort=True):
            series = series.assign(x=series["bucket"].map(position)).sort_values("x")
            ax.plot(series["x"], series["acc"], marker="o", markersize=4, color=_color(colors, spec), label=spec)
        ax.set_xticks(range(len(buckets)), buckets)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("key–query distance (tokens, bucket)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{task}: accuracy by key–query distance (seeds pooled)")
        ax.grid(True, alpha=0.3)
        ax.legend(**LEGEND)
    return fig


def _panels(by_distance: pd.DataFrame) -> pd.Series:
    """Each row's panel: its task, with ``(n=…)`` when the task was run at more than one length."""
    tasks = by_distance["task"].astype(str)
    if "seq_len" not in by_distance.columns:
        return tasks
    lengths = by_distance["seq_len"]
    several = lengths.groupby(tasks).transform("nunique") > 1
    labels = [f"{t} (n={int(n)})" if many else t for t, n, many in zip(tasks, lengths, several, strict=True)]
    return pd.Series(labels, index=by_distance.index)


PARETO_COSTS: dict[str, tuple[str, float]] = {
    "time_per_step_s": ("time per training step (s)", 1.0),
    "peak_mem_bytes": ("peak training memory (MiB)", 1 / MIB),
}


def pareto_figure(accuracy: pd.DataFrame, colors: Palette, *,
                  costs: Sequence[str] = ("time_per_step_s", "peak_mem_bytes")) -> Figure:  # fmt: skip
    """Test accuracy against cost per task (columns) and cost metric (rows); the Pareto front is outlined.

    A point is a spec's mean over usable seeds at the task's training length; the front holds the specs no
    other spec beats on both accuracy and cost.
    """
    summary = accuracy_spread(accuracy)
    summary = summary[summary["seeds_ok"] > 0]
    costs = [c for c in costs if c in summary.columns and (summary[c] > 0).any()]
    if summary.empty or not costs:
        return _empty("no usable accuracy results for a Pareto view")
    tasks = summary[["task", "seq_len"]].drop_duplicates().sort_values(["task", "seq_len"])
    fig = Figure(figsize=(max(4.6 * len(tasks), 6.0), 3.4 * len(costs)))
    axes = fig.subplots(len(costs), len(tasks), squeeze=False, gridspec_kw={"hspace": 0.5, "wspace": 0.35})
    for r, cost in enumerate(costs):
        label, scale = PARETO_COSTS.get(cost, (cost, 1.0))
        for c, (task, seq_len) in enumerate(tasks.itertuples(index=False)):
            ax = axes[r][c]
            part = summary[(summary["task"] == task) & (summary["seq_len"] == seq_len) & (summary[cost] > 0)]
            front = part[pareto_front(part, cost, "test_mean")].sort_values(cost)
            ax.step(front[cost] * scale, front["test_mean"], where="post", color="0.5", linewidth=1, zorder=1,
                    label="Pareto front")  # fmt: skip
            for row in part.itertuples(index=False):
                on_front = row.spec in set(front["spec"])
                ax.scatter(getattr(row, cost) * scale, row.test_mean, s=70 if on_front else 35, zorder=2,
                           color=_color(colors, row.spec), edgecolors="black" if on_front else "none",
                           linewidths=1.5, label=row.spec)  # fmt: skip
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis)
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy")
            ax.set_title(_task_label(task, seq_len).replace("\n", " "), fontsize="medium")
            ax.grid(True, alpha=0.3)
    handles = {s: Line2D([], [], marker="o", linestyle="none", color=_color(colors, s), label=s)
               for s in sorted(summary["spec"].unique())}  # fmt: skip
    front_handle = Line2D([], [], marker="o", color="0.5", markerfacecolor="white", markeredgecolor="black",
                          markeredgewidth=1.5, label="on the Pareto front")  # fmt: skip
    fig.legend(handles=[*handles.values(), front_handle], loc="center left", bbox_to_anchor=(0.92, 0.5),
               fontsize="small", frameon=False)  # fmt: skip
    fig.suptitle("Accuracy vs cost per task\n(outlined: the Pareto front — nothing is both cheaper and more accurate)",
                 fontsize="medium")  # fmt: skip
    return fig


# patterns and approximation ------------------------------------------------------------------------------
def pattern_figure(masks: Mapping[str, object], *, n: int, columns: int = 3) -> Figure:
    """Images of attention patterns: ``masks`` maps a spec to its bool ``(heads or 1, n, n)`` mask (head 0 is
    drawn; black = attended) or to a message string when the mask could not be built."""
    if not masks:
        return _empty("no sparse variants in this run")
    columns = min(columns, len(masks))
    rows = math.ceil(len(masks) / columns)
    height = 3.6 * rows + 0.5  # inches, 0.5 of them for the figure title above the panels' two-line titles
    fig = Figure(figsize=(max(3.3 * columns, 5.0), height))
    grid = {"hspace": 0.4, "wspace": 0.45, "top": 1 - 1.0 / height, "bottom": 0.5 / height}
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=grid).ravel()
    for ax, (spec, mask) in zip(axes, masks.items(), strict=False):
        if isinstance(mask, str):
            ax.set_axis_off()
            ax.set_title(spec, fontsize="medium")
            ax.text(0.5, 0.5, textwrap.fill(mask, 40), ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        image = np.asarray(mask, dtype=bool)
        image = image[0] if image.ndim == 3 else image
        ax.imshow(image, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{spec}\n{image.mean():.1%} of query–key pairs", fontsize="medium")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    for ax in axes[len(masks) :]:
        ax.set_axis_off()
    fig.suptitle(f"Attention patterns at n={n}\n(head 0, bidirectional; black = attended)", y=1 - 0.1 / height,
                 va="top", fontsize="medium")  # fmt: skip
    return fig


def approximation_figure(approximation: pd.DataFrame, colors: Palette) -> Figure:
    """Relative L2 error of each non-exact variant's output against softmax vs n (log–log); cells that did not
    run ok are marked like the scaling plots'."""
    if approximation.empty:
        return _empty("no approximation results")
    frame = _latest(approximation, ["spec", "causal", "seq_len"])
    ok = ok_rows(frame)
    ok = ok[ok["rel_error"] > 0]
    several_causal = frame["causal"].nunique() > 1
    fig, (ax,) = _stacked(1)
    for (spec, causal), series in ok.groupby(["spec", "causal"], sort=True):
        series = series.sort_values("seq_len")
        ax.plot(series["seq_len"], series["rel_error"], marker="o", markersize=4, color=_color(colors, spec),
                linestyle="--" if several_causal and _truthy(causal) else "-",
                label=_series_label(spec, causal, several_causal))  # fmt: skip
    rows = _mark_failures(ax, frame[frame["status"] != "ok"], colors)
    _length_axis(ax, frame["seq_len"])
    ax.set_yscale("log")
    _readable_log_axis(ax.yaxis, values=ok["rel_error"])
    _leave_room_below(ax, ok["rel_error"], rows)
    ax.set_ylabel("relative L2 error vs softmax")
    ax.set_title("Approximation error of non-exact variants (random inputs, log–log)")
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + ([_failure_legend_handle()] if rows else []), **LEGEND)
    return fig
