"""The report's parallelism section: per-token time and sequential steps of the LSTM beside attention layers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnbench.reporting.parallelism import parallelism_table
from attnbench.reporting.plots import palette
from attnbench.reporting.report import draw_plots, expected_cells, parallelism_section, recommendation_section
from attnbench.runs.loading import load_run
from tests.reporting.test_report import synthetic_complexity, synthetic_manifest, write_run

LENGTHS = (256, 512, 1024)


def _layer_rows() -> pd.DataFrame:
    """Layer rows with exact times: the LSTM 1e-6·n s, softmax 1e-9·n² s, gla (chunk 64) 5e-7·n s; batch 2."""
    base = synthetic_complexity()
    template = base.iloc[0].to_dict()
    times = {"lstm": lambda n: 1e-6 * n, "softmax": lambda n: 1e-9 * n**2, "gla": lambda n: 5e-7 * n}
    families = {"lstm": "recurrent-baseline", "softmax": "full", "gla": "recurrent"}
    rows = [
        template | {"spec": spec, "variant": spec, "family": families[spec], "scope": "layer", "pass": "fwd",
                    "seq_len": n, "batch": 2, "status": "ok", "time_median_s": time_of(n), "message": ""}
        for spec, time_of in times.items() for n in LENGTHS
    ]  # fmt: skip
    return pd.concat([base, pd.DataFrame(rows)], ignore_index=True)


def test_per_token_time_and_sequential_steps_per_layer() -> None:
    table = parallelism_table(_layer_rows()).set_index(["spec", "seq_len"])
    assert list(table.loc["lstm", "sequential_steps"]) == list(LENGTHS)  # O(n): one step per token
    assert list(table.loc["softmax", "sequential_steps"]) == [1, 1, 1]  # O(1): every position at once
    assert list(table.loc["gla", "sequential_steps"]) == [n // 64 for n in LENGTHS]  # a scan over chunks
    assert table.loc[("lstm", 512), "per_token_s"] == 1e-6 * 512 / (2 * 512)
    assert table.loc[("softmax", 1024), "per_token_s"] == 1e-9 * 1024**2 / (2 * 1024)


def test_no_lstm_layer_rows_no_section() -> None:
    assert parallelism_table(synthetic_complexity()).empty


def test_the_report_shows_the_section_and_figure_and_keeps_the_lstm_out_of_the_recommendation(tmp_path: Path) -> None:
    manifest = synthetic_manifest()
    manifest["complexity"]["layer"] = True
    data = load_run(write_run(tmp_path / "run", manifest=manifest, complexity=_layer_rows()))
    text = parallelism_section(data, {})
    assert text.startswith("## Parallelism: LSTM vs attention layers")
    lstm_row = next(line for line in text.splitlines() if line.startswith("| lstm |"))
    assert lstm_row == "| lstm | 500 ns · 256 | 500 ns · 512 | 500 ns · 1024 |", lstm_row
    assert next(line for line in text.splitlines() if line.startswith("| softmax |")).endswith("· 1 |")
    figures = {plot.name: draw for plot, draw in draw_plots(data, palette(data.specs))}
    assert len(figures["parallelism_vs_n"]().axes) == 2
    assert "**lstm**" not in recommendation_section(data, 5.0)
    cells = expected_cells(data)
    assert set(cells.loc[cells["spec"] == "lstm", "scope"]) == {"layer"}  # never expected as an attention
