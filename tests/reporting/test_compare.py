"""compare: doctored runs against the synthetic one; regressions found, identical runs pass."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from attnbench.cli.compare import comparison_tables
from attnbench.core.errors import UserError
from attnbench.reporting.compare import Comparison, compare_runs, comparison_summary
from tests.reporting.test_report import WINDOW, synthetic_accuracy, synthetic_complexity, synthetic_manifest, write_run


def run(path: Path, *, complexity: pd.DataFrame | None = None, accuracy: pd.DataFrame | None = None,
        cpu_model: str = "Synthetic CPU") -> Path:  # fmt: skip
    return write_run(
        path,
        manifest=synthetic_manifest(cpu_model=cpu_model),
        complexity=synthetic_complexity() if complexity is None else complexity,
        accuracy=synthetic_accuracy() if accuracy is None else accuracy,
    )


def cell(frame: pd.DataFrame, spec: str, n: int, pass_: str = "fwd") -> pd.Series:
    return (frame["spec"] == spec) & (frame["seq_len"] == n) & (frame["pass"] == pass_)


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return run(tmp_path / "a")


def rendered(cmp: Comparison) -> str:
    console = Console(record=True, width=200)
    for table in comparison_tables(cmp):
        console.print(table)
    return console.export_text()


def test_identical_runs_pass(reference: Path, tmp_path: Path) -> None:
    cmp = compare_runs(reference, run(tmp_path / "b"))
    assert not cmp.has_regressions and cmp.regressions == []
    assert cmp.same_machine and cmp.warnings == []
    assert cmp.not_comparable.empty
    assert len(cmp.complexity) == len(synthetic_complexity()) and len(cmp.accuracy) == 6
    ok = cmp.complexity[cmp.complexity["status_a"] == "ok"]
    assert (ok["time_ratio"] == 1.0).all() and (ok["mem_ratio"] == 1.0).all()
    assert (cmp.complexity["verdict"] == "").all() and (cmp.accuracy["verdict"] == "").all()
    assert cmp.accuracy["delta_points"].fillna(0).eq(0).all()  # performer diverged in both: no accuracy to compare
    assert comparison_summary(cmp).startswith("0 regression(s) in 65 cells")


def test_a_doctored_two_fold_slowdown_is_a_regression(reference: Path, tmp_path: Path) -> None:
    slow = synthetic_complexity()
    slow.loc[cell(slow, WINDOW, 1024), "time_median_s"] *= 2
    cmp = compare_runs(reference, run(tmp_path / "b", complexity=slow))
    assert cmp.has_regressions
    (regression,) = cmp.regressions
    assert regression.kind == "time" and regression.cell == f"{WINDOW} attention fwd n=1024"
    assert regression.change == "2.00× slower"
    tables = comparison_tables(cmp)
    assert [t.title.split(" ")[0] for t in tables] == ["regressions", "complexity:", "time", "accuracy:"]
    table = rendered(cmp)
    assert f"{WINDOW} attention fwd n=1024" in table and "2.00× slower" in table
    assert "1 regression(s) (1 time)" in comparison_summary(cmp)
    faster = compare_runs(tmp_path / "b", reference)  # the other way round it is an improvement
    assert not faster.has_regressions and "faster" in set(faster.complexity["verdict"])


def test_a_slowdown_within_the_spread_or_below_the_threshold_is_not(reference: Path, tmp_path: Path) -> None:
    noisy = synthetic_complexity()
    at = cell(noisy, WINDOW, 1024)
    noisy.loc[at, "time_median_s"] *= 1.3
    noisy.loc[at, "time_iqr_s"] = noisy.loc[at, "time_median_s"] * 0.3  # the intervals overlap
    small = synthetic_complexity()
    small.loc[cell(small, WINDOW, 1024), "time_median_s"] *= 1.08  # outside the tiny IQR but below 10%
    assert not compare_runs(reference, run(tmp_path / "noisy", complexity=noisy)).has_regressions
    assert not compare_runs(reference, run(tmp_path / "small", complexity=small)).has_regressions
    assert compare_runs(reference, tmp_path / "small", fail_on=0.05).has_regressions


def test_memory_growth_and_a_cell_that_stopped_fitting(reference: Path, tmp_path: Path) -> None:
    worse = synthetic_complexity()
    worse.loc[cell(worse, "linear", 8192, "fwd+bwd"), "peak_mem_bytes"] *= 1.5  # 47 MiB → 70 MiB
    worse.loc[cell(worse, "linear", 256), "peak_mem_bytes"] *= 1.5  # 500 KiB → 750 KiB: page noise, not flagged
    oom = cell(worse, "taylor", 4096)
    worse.loc[oom, ["status", "time_median_s", "peak_mem_bytes"]] = ["oom", None, None]
    cmp = compare_runs(reference, run(tmp_path / "b", complexity=worse))
    found = {(r.kind, r.cell, r.change) for r in cmp.regressions}
    assert found == {
        ("memory", "linear attention fwd+bwd n=8192", "1.50× the memory"),
        ("status", "taylor attention fwd n=4096", "ok → oom"),
    }


def test_an_accuracy_drop_beyond_the_threshold_is_a_regression(reference: Path, tmp_path: Path) -> None:
    worse = synthetic_accuracy()
    is_window_mqar = (worse["spec"] == WINDOW) & (worse["task"] == "mqar")
    worse.loc[is_window_mqar, "test_acc"] -= 0.05
    worse.loc[(worse["spec"] == "softmax") & (worse["task"] == "listops"), "test_acc"] -= 0.01  # within 2 points
    diverged = (worse["spec"] == "linear") & (worse["task"] == "mqar")
    worse.loc[diverged, ["status", "test_acc"]] = ["diverged", None]
    cmp = compare_runs(reference, run(tmp_path / "b", accuracy=worse))
    assert {(r.kind, r.cell) for r in cmp.regressions} == {
        ("accuracy", f"mqar n=256 {WINDOW}"), ("accuracy", "mqar n=256 linear")}  # fmt: skip
    drop = next(r for r in cmp.regressions if WINDOW in r.cell)
    assert (drop.a, drop.b, drop.change) == ("93.5%", "88.5%", "dropped 5.0 points")
    assert "no usable seed in B (diverged×2)" in {r.change for r in cmp.regressions}
    strict = compare_runs(reference, tmp_path / "b", acc_drop=0.5)
    assert any(r.cell == "listops n=512 softmax" for r in strict.regressions)
    lenient = compare_runs(reference, tmp_path / "b", acc_drop=10.0)
    assert [r.cell for r in lenient.regressions] == ["mqar n=256 linear"]


def test_cells_on_one_side_only_are_not_comparable(reference: Path, tmp_path: Path) -> None:
    complexity = synthetic_complexity()
    complexity = complexity[complexity["spec"] != "performer"]
    extra = complexity[complexity["spec"] == "linear"].assign(spec="linear:chunk=64")
    accuracy = synthetic_accuracy()
    accuracy = accuracy[accuracy["task"] != "listops"]
    cmp = compare_runs(reference, run(tmp_path / "b", complexity=pd.concat([complexity, extra]), accuracy=accuracy))
    assert not cmp.has_regressions
    sides = cmp.not_comparable.groupby(["kind", "side"]).size().to_dict()
    assert sides == {("accuracy", "only in A"): 2, ("complexity", "only in A"): 12, ("complexity", "only in B"): 12}
    assert "performer attention fwd n=256" in set(cmp.not_comparable["cell"])
    text = rendered(cmp)
    assert "not comparable" in text and "only in B" in text
    assert "26 cell(s) not comparable" in comparison_summary(cmp)


def test_a_different_shape_does_not_line_up(reference: Path, tmp_path: Path) -> None:
    wider = synthetic_complexity().assign(heads=4)
    cmp = compare_runs(reference, run(tmp_path / "b", complexity=wider))
    assert cmp.complexity.empty and len(cmp.not_comparable) == 2 * len(wider)
    assert "heads=4" in " ".join(cmp.not_comparable["cell"])


def test_runs_on_different_machines_are_compared_with_a_warning(reference: Path, tmp_path: Path) -> None:
    cmp = compare_runs(reference, run(tmp_path / "b", cpu_model="Other CPU"))
    assert not cmp.same_machine and not cmp.has_regressions
    assert any("different machines" in w and "Other CPU" in w for w in cmp.warnings)


def test_paths_that_are_not_runs_are_user_errors(reference: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        compare_runs(reference, tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=r"manifest\.json not found"):
        compare_runs(tmp_path / "plain", reference)


def test_runs_with_no_cell_in_common_are_a_user_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from attnbench.cli import app

    timing = write_run(tmp_path / "timing", manifest=synthetic_manifest(), complexity=synthetic_complexity())
    training = write_run(tmp_path / "training", manifest=synthetic_manifest(), accuracy=synthetic_accuracy())
    with pytest.raises(UserError, match=r"have no cell in common: nothing to compare"):
        compare_runs(timing, training)
    result = CliRunner().invoke(app, ["compare", str(timing), str(training)])
    assert result.exit_code == 2, result.output
    assert "no cell in common" in result.output and "regression(s)" not in result.output
