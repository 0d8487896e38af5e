import math

import numpy as np
import pandas as pd
import pytest

from attnbench.reporting.analysis import crossovers, fit_power_law, longest_fit, scaling_exponents


def _rows(spec: str, exponent: float, lengths: list[int], *, scale: float = 1e-9, noise: float = 0.0,
          status: dict[int, str] | None = None) -> list[dict]:  # fmt: skip
    rng = np.random.default_rng(0)
    rows = []
    for n in lengths:
        value = scale * n**exponent * (1 + noise * rng.standard_normal())
        st = (status or {}).get(n, "ok")
        rows.append({
            "spec": spec, "scope": "attention", "pass": "fwd", "causal": False, "seq_len": n, "status": st,
            "time_median_s": value if st == "ok" else math.nan,
            "peak_mem_bytes": value * 1e9 if st == "ok" else math.nan,
        })  # fmt: skip
    return rows


LENGTHS = [256, 512, 1024, 2048, 4096, 8192]


@pytest.mark.parametrize("exponent", [1.0, 1.5, 2.0])
def test_fit_recovers_known_exponents(exponent: float) -> None:
    slope, prefactor, r2 = fit_power_law(LENGTHS, [3e-9 * n**exponent for n in LENGTHS])
    assert slope == pytest.approx(exponent, abs=1e-9)
    assert prefactor == pytest.approx(3e-9, rel=1e-6)
    assert r2 == pytest.approx(1.0)


def test_scaling_exponents_per_variant_and_metric_with_noise() -> None:
    frame = pd.DataFrame(
        _rows("linear", 1.0, LENGTHS, noise=0.03) + _rows("strided", 1.5, LENGTHS, noise=0.03)
        + _rows("softmax", 2.0, LENGTHS, noise=0.03)
    )  # fmt: skip
    exps = scaling_exponents(frame).set_index(["spec", "metric"])
    for spec, expected in (("linear", 1.0), ("strided", 1.5), ("softmax", 2.0)):
        for metric in ("time_median_s", "peak_mem_bytes"):
            row = exps.loc[(spec, metric)]
            assert row["exponent"] == pytest.approx(expected, abs=0.1)
            assert row["points"] == 4 and row["n_min"] == 1024 and row["n_max"] == 8192
            assert row["r2"] > 0.95


def test_exponents_use_only_ok_rows_and_need_three_points() -> None:
    frame = pd.DataFrame(_rows("naive", 2.0, LENGTHS, status={4096: "oom", 8192: "skipped"}))
    row = scaling_exponents(frame).iloc[0]
    assert row["n_max"] == 2048 and row["exponent"] == pytest.approx(2.0)
    tiny = pd.DataFrame(_rows("x", 1.0, [256, 512]))
    assert math.isnan(scaling_exponents(tiny).iloc[0]["exponent"])


def test_crossover_is_where_the_variant_stays_ahead() -> None:
    # softmax: 1e-9 n²; window: 4e-7 n → equal at n = 400; faster from 512 on
    frame = pd.DataFrame(_rows("softmax", 2.0, LENGTHS) + _rows("window", 1.0, LENGTHS, scale=4e-7))
    row = crossovers(frame).set_index("spec").loc["window"]
    assert row["crossover_n"] == 512
    assert not row["always_ahead"]
    assert row["speedup_at_largest_common_n"] == pytest.approx(8192**2 * 1e-9 / (4e-7 * 8192))


def test_crossover_counts_a_baseline_oom_as_a_win_and_reports_never() -> None:
    frame = pd.DataFrame(
        _rows("softmax", 2.0, LENGTHS, status={8192: "oom"}) + _rows("window", 1.0, LENGTHS, scale=1e-5)
        + _rows("slow", 2.0, LENGTHS, scale=2e-9, status={8192: "oom"})
    )  # fmt: skip
    table = crossovers(frame).set_index("spec")
    assert table.loc["window", "crossover_n"] == 8192  # only ahead once softmax ran out of memory
    assert math.isnan(table.loc["slow", "crossover_n"])


def test_longest_fit_and_what_stopped_it() -> None:
    frame = pd.DataFrame(_rows("naive", 2.0, LENGTHS, status={4096: "oom", 8192: "skipped"}) + _rows("w", 1, LENGTHS))
    fits = longest_fit(frame).set_index("spec")
    assert fits.loc["naive", "longest_ok_n"] == 2048
    assert fits.loc["naive", "stopped_by"] == "oom"
    assert fits.loc["w", "longest_ok_n"] == 8192 and fits.loc["w", "stopped_by"] == ""
