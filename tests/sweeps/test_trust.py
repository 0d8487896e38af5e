"""Timings that hold on a busy machine: noise is injected through a scripted executor, never measured."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from attnbench.core.robust import power_law
from attnbench.execution.protocol import Outcome
from attnbench.measure.cells import MemoryReading, Timing
from attnbench.measure.evidence import BlockEvidence, run_delay_s, wait_fraction
from attnbench.measure.stability import Reading, StabilityRules, off_series
from attnbench.measure.timing import time_cell
from attnbench.reporting.analysis import crossovers, fit_power_law, recommendations, scaling_exponents
from attnbench.reporting.quality import quality_section
from attnbench.runs.loading import load_run
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import COMPLEXITY_COLUMNS, COMPLEXITY_CSV, COMPLEXITY_RAW_COLUMNS, COMPLEXITY_RAW_CSV
from attnbench.sweeps.complexity import ComplexityConfig, plan_cells, run_sweep
from tests.sweeps.test_executor_seam import ScriptedExecutor

LENGTHS = [32, 64, 128, 256, 512, 1024]
KEY = ["spec", "scope", "pass", "seq_len"]


def true_time(spec: str, n: int) -> float:
    """softmax ~ n², linear ~ n: linear overtakes softmax at n = 800, so 1024 is the crossover on this grid."""
    return 1e-8 * n * n if spec == "softmax" else 8e-6 * n


def timing(median: float, *, spread: float = 0.0, waited: float | None = None, threads: int = 1) -> Timing:
    """Five blocks around ``median`` (``spread`` apart at the quartiles), with evidence when ``waited`` is given."""
    blocks = tuple(median * (1 + spread * k) for k in (-1, -0.5, 0, 0.5, 1))
    evidence = () if waited is None else tuple(
        BlockEvidence(wall_s=t, cpu_s=t, run_delay_s=waited * t * threads, pressure_s=None) for t in blocks
    )  # fmt: skip
    return Timing(first_call_s=median, time_median_s=median, time_iqr_s=spread * median, raw_times_s=blocks,
                  runs_per_block=1, blocks=evidence)  # fmt: skip


Script = Callable[[Any, int], Timing]  # (cell, attempt) -> the timing the fake worker reports


def sweep(tmp_path: Path, script: Script, **config: Any) -> tuple[RunDir, ScriptedExecutor, pd.DataFrame]:
    seen: dict[tuple[str, int], int] = {}

    def answer(fn: Callable[..., Any], cell: Any) -> Outcome:
        if fn is not time_cell:
            return Outcome("ok", MemoryReading(1000 * cell.cell.seq_len, "scripted"))
        key = (cell.spec, cell.seq_len)
        seen[key] = seen.get(key, 0) + 1
        return Outcome("ok", script(cell, seen[key]))

    values = {"variants": ["softmax", "linear"], "seq_lens": LENGTHS, "passes": ["fwd"], "heads": 2,
              "head_dim": 8, "threads": 1} | config  # fmt: skip
    run_dir = RunDir.create("complexity", out=tmp_path / "run")
    cfg = ComplexityConfig(**values)
    run_dir.write_manifest({"command": "complexity", "complexity": cfg.to_dict()})
    executor = ScriptedExecutor(answer)
    run_sweep(cfg, run_dir, executor, machine_peak_gflops=None)
    return run_dir, executor, run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)


def time_submissions(executor: ScriptedExecutor, spec: str, n: int) -> int:
    return sum(fn is time_cell and c.spec == spec and c.seq_len == n for fn, c in executor.submitted)


def row(rows: pd.DataFrame, spec: str, n: int) -> pd.Series:
    return rows.set_index(["spec", "seq_len"]).loc[(spec, n)]


def test_an_injected_outlier_is_measured_again_and_reaches_no_result(tmp_path: Path) -> None:
    def script(cell: Any, attempt: int) -> Timing:
        spike = 20.0 if (cell.spec, cell.seq_len, attempt) == ("softmax", 512, 1) else 1.0
        return timing(true_time(cell.spec, cell.seq_len) * spike, waited=0.0)

    run_dir, executor, rows = sweep(tmp_path, script)
    assert not rows.duplicated(KEY).any() and len(rows) == 2 * len(LENGTHS)
    assert time_submissions(executor, "softmax", 512) == 2  # the spike was a trigger: measured again
    assert time_submissions(executor, "linear", 512) == 1
    spiked = row(rows, "softmax", 512)
    assert spiked["time_median_s"] == pytest.approx(true_time("softmax", 512))
    assert bool(spiked["stable"]) and int(spiked["attempts"]) == 2
    raw = run_dir.rows(COMPLEXITY_RAW_CSV, COMPLEXITY_RAW_COLUMNS)
    attempts = raw[(raw["spec"] == "softmax") & (raw["seq_len"] == 512)]["attempt"]
    assert sorted(attempts.unique()) == [1, 2]  # every attempt is in the raw file
    assert raw["time_s"].max() == pytest.approx(20 * true_time("softmax", 512))
    exps = scaling_exponents(rows, metrics=("time_median_s",)).set_index("spec")
    assert exps.loc["softmax", "exponent"] == pytest.approx(2.0, abs=1e-9)
    cross = crossovers(rows).set_index("spec")
    assert cross.loc["linear", "crossover_n"] == 1024  # with the spike kept, linear would "win" from 512
    recs = recommendations(rows, pd.DataFrame()).set_index("seq_len")
    assert recs.loc[512, "fastest"] == "softmax"
    assert recs.loc[512, "fastest_time_s"] == pytest.approx(true_time("softmax", 512))
    # the same sweep without re-measures: the spike stays, and only the instability mark keeps it out
    _, _, blind = sweep(tmp_path / "blind", script, stability={"remeasure": 0})
    kept = row(blind, "softmax", 512)
    assert kept["time_median_s"] == pytest.approx(20 * true_time("softmax", 512)) and not bool(kept["stable"])
    assert "its series' line" in kept["message"]
    assert crossovers(blind.assign(stable=True)).set_index("spec").loc["linear", "crossover_n"] == 512
    assert crossovers(blind).set_index("spec").loc["linear", "crossover_n"] == 1024


def test_unstable_cells_are_drawn_hollow(tmp_path: Path) -> None:
    from attnbench.reporting import plots

    def script(cell: Any, attempt: int) -> Timing:
        spread = 0.5 if (cell.spec, cell.seq_len) == ("linear", 256) else 0.0
        return timing(true_time(cell.spec, cell.seq_len), spread=spread, waited=0.0)

    _, _, rows = sweep(tmp_path, script, stability={"remeasure": 0})
    fig = plots.scaling_figure(rows, plots.palette(["softmax", "linear"]))
    hollow = [line for ax in fig.axes for line in ax.get_lines() if line.get_markerfacecolor() == "white"]
    assert [list(line.get_xdata()) for line in hollow] == [[256]]


def test_a_cell_that_stays_noisy_ends_unstable_and_is_listed_and_left_out(tmp_path: Path) -> None:
    def script(cell: Any, attempt: int) -> Timing:
        base = true_time(cell.spec, cell.seq_len)
        if (cell.spec, cell.seq_len) == ("linear", 256):
            return timing(base * 3, spread=0.4, waited=0.0)  # blocks all over the place, every time
        if (cell.spec, cell.seq_len) == ("softmax", 128) and attempt == 1:
            return timing(base * 0.9, waited=0.5)  # fast-looking, but its threads waited half the time
        return timing(base, waited=0.0)

    run_dir, _, rows = sweep(tmp_path, script)
    noisy = row(rows, "linear", 256)
    assert not bool(noisy["stable"]) and int(noisy["attempts"]) == 3  # first try + --remeasure 2
    assert noisy["message"].startswith("unstable: blocks spread")
    waited = row(rows, "softmax", 128)  # the reading with the best evidence is kept, not the fastest
    assert bool(waited["stable"]) and waited["time_median_s"] == pytest.approx(true_time("softmax", 128))
    assert waited["wait_fraction"] == pytest.approx(0.0)
    exps = scaling_exponents(rows, metrics=("time_median_s",)).set_index("spec")
    assert exps.loc["linear", "unstable_left_out"] == 1 and not exps.loc["linear", "uses_unstable"]
    assert exps.loc["linear", "exponent"] == pytest.approx(1.0, abs=1e-9)
    text = quality_section(load_run(run_dir.path))
    assert "## Measurement quality" in text and "| linear attention fwd n=256 |" in text
    assert "1 unstable" in text and "blocks' spread (IQR / median) above 15%" in text


def test_a_reproduced_clean_reading_off_the_series_is_a_real_effect(tmp_path: Path) -> None:
    def script(cell: Any, attempt: int) -> Timing:
        cliff = 4.0 if (cell.spec, cell.seq_len) == ("linear", 512) else 1.0  # a cache cliff: every time
        return timing(true_time(cell.spec, cell.seq_len) * cliff, waited=0.0)

    _, executor, rows = sweep(tmp_path, script)
    cliff = row(rows, "linear", 512)
    assert time_submissions(executor, "linear", 512) == 2
    assert bool(cliff["stable"]) and int(cliff["attempts"]) == 2
    assert cliff["time_median_s"] == pytest.approx(4 * true_time("linear", 512))


def test_remeasure_zero_and_the_budget_bound_the_extra_work(tmp_path: Path) -> None:
    def script(cell: Any, attempt: int) -> Timing:
        return timing(true_time(cell.spec, cell.seq_len), spread=0.5, waited=0.0)  # every cell noisy

    _, executor, rows = sweep(tmp_path, script, stability={"remeasure": 0})
    assert len(executor.submitted) == 2 * 2 * len(LENGTHS)  # one time and one memory worker per cell
    assert not rows["stable"].astype(bool).any() and (rows["attempts"] == 1).all()
    _, executor, rows = sweep(tmp_path / "again", script)
    extra = sum(fn is time_cell for fn, _ in executor.submitted) - 2 * len(LENGTHS)
    assert extra == StabilityRules().remeasure_budget(2 * len(LENGTHS))


def test_resume_keeps_attempts_and_never_duplicates_a_cell(tmp_path: Path) -> None:
    def script(cell: Any, attempt: int) -> Timing:
        spike = 20.0 if (cell.spec, cell.seq_len, attempt) == ("softmax", 128, 1) else 1.0
        return timing(true_time(cell.spec, cell.seq_len) * spike, waited=0.0)

    run_dir, _, rows = sweep(tmp_path, script, seq_lens=LENGTHS[:3])
    assert int(row(rows, "softmax", 128)["attempts"]) == 2
    config = ComplexityConfig(variants=["softmax", "linear"], seq_lens=LENGTHS, passes=["fwd"], heads=2, head_dim=8,
                              threads=1)  # fmt: skip

    def answer(fn: Callable[..., Any], cell: Any) -> Outcome:
        if fn is time_cell:
            return Outcome("ok", timing(true_time(cell.spec, cell.seq_len), waited=0.0))
        return Outcome("ok", MemoryReading(1, "scripted"))

    again = ScriptedExecutor(answer)
    run_sweep(config, run_dir, again, machine_peak_gflops=None)
    assert {c.seq_len for fn, c in again.submitted if fn is time_cell} == set(LENGTHS[3:])
    rows = run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)
    assert len(rows) == 2 * len(LENGTHS) and not rows.duplicated(KEY).any()
    assert int(row(rows, "softmax", 128)["attempts"]) == 2
    raw = run_dir.rows(COMPLEXITY_RAW_CSV, COMPLEXITY_RAW_COLUMNS)
    assert not raw.duplicated([*KEY, "attempt", "block"]).any()


def test_each_round_of_length_runs_in_a_seeded_shuffled_order() -> None:
    variants = ["softmax", "linear", "performer", "window", "bigbird"]

    def order(seed: int) -> list[tuple[int, str, str]]:
        config = ComplexityConfig(variants=variants, seq_lens=[64, 128], seed=seed)
        return [(c.seq_len, c.spec, c.pass_) for c in plan_cells(config)]

    first = order(0)
    assert first == order(0)  # seeded: the same run plans the same order
    assert [n for n, _, _ in first] == sorted(n for n, _, _ in first)  # rounds of ascending length
    assert len(set(first)) == len(first) == 2 * 2 * len(variants)
    by_seed = {tuple(order(seed)) for seed in range(4)}
    assert len(by_seed) > 1
    assert first[: 2 * len(variants)] != [(64, v, p) for v in variants for p in ("fwd", "fwd+bwd")]


def test_robust_fit_recovers_a_planted_exponent_where_least_squares_does_not() -> None:
    n = 2.0 ** np.arange(6, 14)  # eight lengths
    wobble = np.array([1.00, 1.03, 0.98, 1.02, 0.99, 1.01, 0.97, 1.02])
    t = 3e-9 * n**1.7 * wobble
    t[5] *= 30  # one disturbed length
    line = power_law(n, t)
    assert line.slope == pytest.approx(1.7, abs=0.05)
    assert line.slope_low <= 1.7 <= line.slope_high
    assert line.slope_high - line.slope_low < 1.0
    naive, _, _ = fit_power_law(n, t)
    assert abs(naive - 1.7) > 0.1  # the least-squares slope the report used to print is dragged away


def test_the_series_rule_and_the_evidence_rules_trigger_only_off_line() -> None:
    series = {64: 1e-3, 128: 4e-3, 256: 16e-3}
    assert off_series(512, 64e-3, series, 2.0) is None
    assert off_series(512, 300e-3, series, 2.0) is not None
    assert off_series(512, 10e-3, series, 2.0) is not None  # too fast is off the line too
    assert off_series(512, 300e-3, {64: 1e-3}, 2.0) is None  # one other length: no line to judge by
    rules = StabilityRules()
    assert Reading(1.0, 1.0, 0.01, 0.0).doubts(rules) == []
    assert Reading(1.0, 1.0, 0.5, 0.0).doubts(rules)[0].startswith("blocks spread")
    assert Reading(1.0, 1.0, 0.01, 0.4).doubts(rules)[0].startswith("waited for a CPU")
    assert Reading(1.0, 1.0, 0.01, None).doubts(rules) == []  # no evidence readable: not held against it


def test_wait_fraction_uses_run_delay_then_cpu_pressure_and_degrades_to_none() -> None:
    delayed = [BlockEvidence(wall_s=1.0, cpu_s=2.0, run_delay_s=0.5, pressure_s=0.9)] * 2
    assert wait_fraction(delayed, threads=2) == pytest.approx(0.25)  # 1 s waited of 4 thread-seconds
    pressure_only = [BlockEvidence(wall_s=1.0, cpu_s=1.0, run_delay_s=None, pressure_s=0.3)]
    assert wait_fraction(pressure_only, threads=2) == pytest.approx(0.3)
    assert wait_fraction([BlockEvidence(1.0, 1.0, None, None)], threads=1) is None
    delay = run_delay_s()
    assert delay is None or (delay >= 0 and math.isfinite(delay))


def test_stability_rules_refuse_nonsense_with_the_option_named() -> None:
    from attnbench.core.errors import UserError

    with pytest.raises(UserError, match="--remeasure must be >= 0"):
        StabilityRules(remeasure=-1)
    with pytest.raises(UserError, match="series_factor must be > 1"):
        StabilityRules(series_factor=0.5)
    assert ComplexityConfig.from_dict(ComplexityConfig(variants=["softmax"]).to_dict()).stability == StabilityRules()
