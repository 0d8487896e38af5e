"""Accuracy along n: the recommendation per task and length, the MAD-style score, the accuracy-vs-n figure.

Pure functions of result frames (``accuracy.csv``, ``complexity.csv``), like :mod:`attnbench.reporting.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from attnbench.core.baseline import ACC_TOLERANCE_POINTS, BASELINE
from attnbench.reporting.analysis import accuracy_spread, usable_accuracy
from attnbench.reporting.plots import LEGEND, _color, _empty, _length_axis, _stacked

# MAD's six tasks under our names (in-context recall is MQAR); a run holding all six gets a MAD-style score
MAD_TASK_NAMES: tuple[str, ...] = (
    "mqar", "selective-copy", "fuzzy-recall", "noisy-recall", "compression", "memorization",
)  # fmt: skip
REC_COLUMNS = ("task", "seq_len", "fastest", "leanest", "cost_from", "note")


def _learned(row: pd.Series, tolerance_points: float) -> bool:
    majority = 0.0 if pd.isna(row["majority_acc"]) else float(row["majority_acc"])
    return float(row["test_mean"]) - majority > tolerance_points / 100


def _pick(frame: pd.DataFrame, time: str, memory: str) -> tuple[str | None, str | None]:
    """The fastest and the leanest spec of ``frame`` (specs already qualified)."""
    timed = frame[frame[time].notna()]
    fastest = str(timed.loc[timed[time].idxmin(), "spec"]) if not timed.empty else None
    sized = frame[frame[memory].notna()]
    leanest = str(sized.sort_values([memory, time]).iloc[0]["spec"]) if not sized.empty else None
    return fastest, leanest


def task_recommendations(
    complexity: pd.DataFrame,
    accuracy: pd.DataFrame,
    *,
    tolerance_points: float = ACC_TOLERANCE_POINTS,
    baseline: str = BASELINE,
) -> pd.DataFrame:
    """Per task × n: the fastest and the leanest spec that keeps accuracy on that task at that n.

    The lengths are those the task was trained at plus those ``complexity`` timed (one context: its rows as
    given, the caller picks scope, pass and causality). "Keeps accuracy" at n is judged at n if the task was
    trained there, else at the nearest trained length above n (named in ``note``): accuracy rarely rises with
    n, so that errs on the safe side. Beyond the longest trained length nothing is picked ("accuracy not
    measured beyond n = X"); where ``baseline`` did not learn the task at the judged length (its mean test
    accuracy within ``tolerance_points`` of the majority rate) nothing is compared and ``note`` says so.
    At a trained length the cost is the training step's (time per step, peak memory); elsewhere the timed
    attention's (``cost_from``). A spec keeps accuracy when its mean is at least the baseline's mean minus
    ``tolerance_points``/100.
    """
    spread = accuracy_spread(accuracy)
    spread = spread[spread["seq_len"].notna()]
    if spread.empty:
        return pd.DataFrame(columns=REC_COLUMNS)
    timed = pd.DataFrame()
    if not complexity.empty:
        timed = complexity[(complexity["status"] == "ok") & complexity["time_median_s"].notna()]
        timed = timed.drop_duplicates(["spec", "seq_len"], keep="last")
    rows = []
    for task, part in spread.groupby("task", sort=True):
        trained = sorted(int(n) for n in part["seq_len"].unique())
        lengths = sorted(set(trained) | {int(n) for n in (timed["seq_len"] if not timed.empty else [])})
        for n in lengths:
            record: dict[str, object] = {"task": task, "seq_len": n, "fastest": None, "leanest": None,
                                         "cost_from": "", "note": ""}  # fmt: skip
            above = [m for m in trained if m >= n]
            if not above:
                record["note"] = f"accuracy not measured beyond n = {trained[-1]}"
                rows.append(record)
                continue
            judged_at = above[0]
            at = part[part["seq_len"] == judged_at].set_index("spec")
            where = "" if judged_at == n else f" (accuracy judged at n = {judged_at})"
            if baseline not in at.index or at.loc[baseline, "seeds_ok"] == 0:
                record["note"] = f"{baseline} has no usable result at n = {judged_at}: nothing to compare against"
                rows.append(record)
                continue
            base = at.loc[baseline]
            if not _learned(base, tolerance_points):
                record["note"] = (f"{baseline} did not learn the task at n = {judged_at} (test "
                                  f"{100 * base['test_mean']:.0f} % vs majority {100 * base['majority_acc']:.0f} %): "
                                  "no comparison")  # fmt: skip
                rows.append(record)
                continue
            floor = float(base["test_mean"]) - tolerance_points / 100
            keeping = at[(at["seeds_ok"] > 0) & (at["test_mean"] >= floor)].reset_index()
            if judged_at == n:
                fastest, leanest = _pick(keeping, "time_per_step_s", "peak_mem_bytes")
                record["cost_from"] = "training step"
            else:
                here = timed[(timed["seq_len"] == n) & timed["spec"].isin(keeping["spec"])]
                fastest, leanest = _pick(here, "time_median_s", "peak_mem_bytes")
                record["cost_from"] = "timed attention"
            record |= {"fastest": fastest, "leanest": leanest}
            if fastest is None:
                record["note"] = f"none of the specs keeping accuracy was timed at n = {n}{where}"
            else:
                record["note"] = where.strip(" ()")
            rows.append(record)
    return pd.DataFrame(rows, columns=REC_COLUMNS)


def mad_scores(accuracy: pd.DataFrame, *, tasks: Sequence[str] = MAD_TASK_NAMES) -> pd.DataFrame:
    """Per spec: the MAD-style score, the mean over settings of the best test accuracy, and each task's mean.

    A setting is a (task spec, n); its best is the maximum test accuracy over the spec's usable rows (seeds,
    and the cells of a learning-rate × weight-decay grid). Empty unless every task of ``tasks`` has a usable
    row. ``settings`` counts the settings the spec has a usable best on; a setting it failed scores 0.
    """
    columns = ["spec", "mad_score", "settings", *tasks]
    if accuracy.empty:
        return pd.DataFrame(columns=columns)
    frame = accuracy.assign(name=accuracy["task"].astype(str).str.partition(":")[0])
    frame = frame[frame["name"].isin(tasks)]
    good = usable_accuracy(frame)
    if good.empty or set(good["name"]) != set(tasks):
        return pd.DataFrame(columns=columns)
    settings = frame[["name", "task", "seq_len"]].drop_duplicates()
    best = good.groupby(["task", "seq_len", "spec"], dropna=False)["test_acc"].max()
    rows = []
    for spec in sorted(frame["spec"].unique()):
        per_task: dict[str, list[float]] = {t: [] for t in tasks}
        for setting in settings.itertuples(index=False):
            key = (setting.task, setting.seq_len, spec)
            per_task[setting.name].append(float(best[key]) if key in best.index else 0.0)
        scores = [s for values in per_task.values() for s in values]
        rows.append({
            "spec": spec, "mad_score": sum(scores) / len(scores) if scores else math.nan,
            "settings": sum(1 for s in settings.itertuples(index=False) if (s.task, s.seq_len, spec) in best.index),
            **{t: sum(v) / len(v) if v else math.nan for t, v in per_task.items()},
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns).sort_values("mad_score", ascending=False, ignore_index=True)


def tasks_along_n(accuracy: pd.DataFrame) -> list[str]:
    """The tasks trained at two or more lengths (those an accuracy-vs-n figure has a line for)."""
    if accuracy.empty:
        return []
    lengths = accuracy.dropna(subset=["seq_len"]).groupby("task")["seq_len"].nunique()
    return sorted(lengths[lengths >= 2].index)


def accuracy_vs_n_figure(accuracy: pd.DataFrame, colors: dict, *, tasks: Sequence[str] | None = None) -> Figure:
    """Test accuracy against training length, one panel per task, one line per spec; majority rate dashed."""
    tasks = list(tasks) if tasks is not None else tasks_along_n(accuracy)
    spread = accuracy_spread(accuracy)
    spread = spread[spread["task"].isin(tasks) & (spread["seeds_ok"] > 0)]
    if spread.empty:
        return _empty("no task trained at two or more lengths")
    fig, axes = _stacked(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        part = spread[spread["task"] == task].sort_values("seq_len")
        for spec, series in part.groupby("spec", sort=True):
            ax.plot(series["seq_len"], series["test_mean"], marker="o", markersize=4, color=_color(colors, spec),
                    label=spec)  # fmt: skip
        majority = part.groupby("seq_len")["majority_acc"].mean().dropna()
        if not majority.empty:
            ax.plot(majority.index, majority.values, color="black", linestyle="--", linewidth=1.2,
                    label="majority-class rate")  # fmt: skip
        _length_axis(ax, part["seq_len"].unique())
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.set_title(f"{task}: accuracy vs n")
        ax.grid(True, alpha=0.3)
        ax.legend(**LEGEND)
    return fig
