"""The report's figures, asserted on the matplotlib objects: lines, labels, scales, markers, colours."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from attnbench.reporting import plots
from attnbench.reporting.analysis import pareto_front
from attnbench.reporting.report import pattern_masks
from tests.reporting.test_report import (
    FAILED,
    MODELS,
    WINDOW,
    synthetic_accuracy,
    synthetic_approximation,
    synthetic_by_distance,
    synthetic_complexity,
)

COLORS = plots.palette([*MODELS, "extra"])


def data_lines(ax: Axes) -> list[Line2D]:
    """The lines that are series (in the legend), not markers or reference lines."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_") and len(line.get_xdata())]


def failure_markers(ax: Axes) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_label().startswith("_failed")]


def test_palette_is_one_stable_colour_per_spec() -> None:
    colors = plots.palette(["b", "a", "c", "a"])
    assert list(colors) == ["a", "b", "c"] and len(set(colors.values())) == 3
    assert plots.palette(["c", "b", "a"]) == colors
    many = plots.palette([f"v{i}" for i in range(25)])
    assert len(set(many.values())) == 25


@pytest.mark.parametrize(("metric", "unit"), [("time_median_s", "(log scale)"), ("peak_mem_bytes", "(MiB)")])
def test_scaling_figure_has_a_line_per_variant_with_its_slope(metric: str, unit: str) -> None:
    fig = plots.scaling_figure(synthetic_complexity(), COLORS, metric=metric)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # one panel per pass
    for ax, pass_ in zip(fig.axes, ("forward", "forward + backward"), strict=True):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "sequence length n" in ax.get_xlabel() and ax.get_ylabel().endswith(unit)
        assert pass_ in ax.get_title() and "log–log" in ax.get_title()
        lines = data_lines(ax)
        assert sorted(line.get_label().split(" (")[0] for line in lines) == sorted(MODELS)
        slopes = {line.get_label().split(" (")[0]: line.get_label() for line in lines}
        assert slopes["softmax"] == "softmax (slope 2.00)" and slopes[WINDOW] == f"{WINDOW} (slope 1.00)"
        for line in lines:
            spec = line.get_label().split(" (")[0]
            assert line.get_color() == COLORS[spec]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert all(re.search(r"\(slope \d\.\d\d\)$", text) for text in legend[:-1])
        assert legend[-1] == "failed / skipped cell (status)"


def test_scaling_figure_marks_failed_and_skipped_cells_with_their_status() -> None:
    fig = plots.scaling_figure(synthetic_complexity(), COLORS)
    for ax in fig.axes:
        marks = failure_markers(ax)
        assert len(marks) == len(FAILED)
        assert {(m.get_label().split()[1], int(m.get_xdata()[0])) for m in marks} == set(FAILED)
        assert all(m.get_marker() == "x" for m in marks)
        assert sorted(t.get_text() for t in ax.texts) == sorted(FAILED.values())
        softmax = next(line for line in data_lines(ax) if line.get_label().startswith("softmax"))
        assert max(softmax.get_xdata()) == 2048  # the failed lengths are not drawn as measurements
        lowest_point = min(min(line.get_ydata()) for line in data_lines(ax))
        assert ax.get_ylim()[0] < lowest_point  # the strip of markers sits below the data


def test_scaling_figure_skips_zero_memory_readings_and_handles_a_variant_without_ok_cells() -> None:
    frame = synthetic_complexity()
    frame.loc[(frame["spec"] == "linear") & (frame["seq_len"] == 256), "peak_mem_bytes"] = 0.0
    frame.loc[frame["spec"] == "taylor", "status"] = "error"
    fig = plots.scaling_figure(frame, COLORS, metric="peak_mem_bytes")
    ax = fig.axes[0]
    linear = next(line for line in data_lines(ax) if line.get_label().startswith("linear"))
    assert 256 not in linear.get_xdata()
    assert any(line.get_label() == "taylor (no ok cell)" for line in ax.get_lines())


def test_gflops_figure_draws_the_machine_peak() -> None:
    fig = plots.gflops_figure(synthetic_complexity(), COLORS, peak_gflops=46.2)
    for ax in fig.axes:
        peak = [line for line in ax.get_lines() if "matmul peak" in line.get_label()]
        assert len(peak) == 1 and set(peak[0].get_ydata()) == {46.2}
        assert peak[0].get_label() == "matmul peak (46.2 GFLOP/s)"
        assert len(data_lines(ax)) == len(MODELS) + 1
        assert ax.get_xscale() == "log" and "GFLOP/s" in ax.get_ylabel()
    without = plots.gflops_figure(synthetic_complexity(), COLORS, peak_gflops=None)
    assert not [line for line in without.axes[0].get_lines() if "peak" in line.get_label()]


def test_accuracy_figure_bars_spread_baseline_and_failures() -> None:
    fig = plots.accuracy_figure(synthetic_accuracy(), COLORS)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = {c.get_label(): round(c.patches[0].get_height(), 4) for c in bars if not c.get_label().startswith("_")}
    assert heights == {"softmax": 0.41, WINDOW: 0.4, "linear": 0.6}  # first bar of each spec: listops, then mqar
    assert len(bars) == 5  # softmax and window on both tasks, linear on mqar; performer diverged
    assert all(c.errorbar is not None for c in bars)  # two seeds each: min–max bars
    lower, upper = bars[0].errorbar.lines[2][0].get_segments()[0][:, 1]
    assert (lower, upper) == pytest.approx((0.40, 0.42))
    majority = [c for c in ax.collections if "majority" in str(c.get_label())]
    assert len(majority) == 2 and majority[0].get_segments()[0][0][1] == pytest.approx(0.18)
    assert [m.get_marker() for m in failure_markers(ax)] == ["x"]
    assert [t.get_text() for t in ax.texts] == ["diverged×2"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["linear", "performer (no usable seed)", "softmax", WINDOW, "majority-class baseline"]
    assert ax.get_ylabel() == "test accuracy" and [t.get_text() for t in ax.get_xticklabels()] == [
        "listops\n(n=512)", "mqar\n(n=256)"]  # fmt: skip


def test_distance_figure_orders_buckets_numerically_whatever_their_form() -> None:
    frame = synthetic_by_distance().sample(frac=1.0, random_state=0)  # shuffled rows
    fig = plots.distance_figure(frame, COLORS)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64-127",
                                                            "128-255"]  # fmt: skip
    lines = data_lines(ax)
    assert sorted(line.get_label() for line in lines) == sorted(["softmax", WINDOW, "linear"])
    window = next(line for line in lines if line.get_label() == WINDOW)
    assert np.all(np.diff(window.get_ydata()) < 0)  # falls off with distance, in bucket order
    as_ints = frame.assign(distance_bucket=frame["distance_bucket"].map(lambda b: int(str(b).split("-")[0])))
    int_ax = plots.distance_figure(as_ints, COLORS).axes[0]
    assert [t.get_text() for t in int_ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64", "128"]
    assert plots.bucket_start("16-31") == 16 and plots.bucket_start(8) == 8 and plots.bucket_start("0-15") == 0


def test_pareto_front_and_figure() -> None:
    points = pd.DataFrame({"cost": [1.0, 2.0, 3.0, 2.5, 4.0], "acc": [0.5, 0.7, 0.9, 0.6, 0.9]})
    assert pareto_front(points, "cost", "acc").tolist() == [True, True, True, False, False]
    fig = plots.pareto_figure(synthetic_accuracy(), COLORS)
    assert len(fig.axes) == 4  # (time, memory) × (listops, mqar)
    mqar_time = fig.axes[1]
    assert mqar_time.get_xscale() == "log" and mqar_time.get_xlabel() == "time per training step (s)"
    front = next(line for line in mqar_time.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [0.02, 0.03, 0.05]  # linear, window, softmax: each buys accuracy
    doctored = synthetic_accuracy()
    doctored.loc[doctored["spec"] == "softmax", "time_per_step_s"] = 0.01  # now cheapest and best: front of one
    front = next(line for line in plots.pareto_figure(doctored, COLORS).axes[1].get_lines() if line.get_label() ==
                 "Pareto front")  # fmt: skip
    assert list(front.get_xdata()) == [0.01]


def test_pattern_figure_draws_each_mask() -> None:
    masks = pattern_masks([WINDOW, "no-such-variant"], n=128, head_dim=16, num_heads=2)
    assert isinstance(masks["no-such-variant"], str) and masks["no-such-variant"].startswith("not drawn")
    fig = plots.pattern_figure(masks, n=128)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (128, 128) and bool(image[0, 0]) and not bool(image[0, 127])
    assert fig.axes[0].get_xlabel() == "key position" and WINDOW in fig.axes[0].get_title()
    assert "not drawn" in fig.axes[1].texts[0].get_text()


def test_approximation_figure_is_log_log_and_marks_errors() -> None:
    fig = plots.approximation_figure(synthetic_approximation(), COLORS)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and "relative L2 error" in ax.get_ylabel()
    assert sorted(line.get_label() for line in data_lines(ax)) == ["linear", "performer", "taylor"]
    assert [(m.get_xdata()[0], t.get_text()) for m, t in zip(failure_markers(ax), ax.texts, strict=True)] == [
        (2048, "error")]  # fmt: skip


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    fig = plots.approximation_figure(synthetic_approximation(), COLORS)
    paths = plots.save_figure(fig, tmp_path / "plots", "approx")
    assert [p.name for p in paths] == ["approx.png", "approx.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:500]


def test_empty_inputs_give_a_figure_that_says_so() -> None:
    empty = pd.DataFrame(columns=["spec", "status", "seq_len", "causal", "rel_error"])
    for fig in (plots.approximation_figure(empty, COLORS), plots.pattern_figure({}, n=64)):
        assert isinstance(fig, Figure) and fig.axes[0].texts[0].get_text().startswith("no ")
