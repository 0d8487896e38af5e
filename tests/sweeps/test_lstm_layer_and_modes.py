"""`--layer` times an LSTM layer (spec ``lstm``) beside the attention layers; sweeps honour supports_noncausal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.baseline import RECURRENT_BASELINE_FAMILY
from attnbench.measure.cells import CellSpec
from attnbench.measure.cost import cell_flops
from attnbench.measure.workload import build_workload
from attnbench.training.cell import run_accuracy_cell
from attnbench.training.presets import get_preset

runner = CliRunner()
TINY = ["--seq-len", "32", "--heads", "2", "--head-dim", "8", "--min-run-time", "0.01", "--threads", "1",
        "--pass", "fwd"]  # fmt: skip


def test_layer_sweep_times_an_lstm_layer_and_skips_noncausal_cells_of_causal_only_variants(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["bench", "complexity", "--variant", "gla", "--layer", *TINY, "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "complexity.csv").set_index(["spec", "scope"])
    lstm = rows.loc[("lstm", "layer")]
    assert lstm["status"] == "ok" and lstm["variant"] == "lstm" and lstm["family"] == RECURRENT_BASELINE_FAMILY
    assert lstm["time_median_s"] > 0 and lstm["flops"] > 0
    assert ("lstm", "attention") not in rows.index  # an LSTM is a layer, not an attention
    for scope in ("attention", "layer"):  # gla is causal-only and this sweep is not causal
        gla = rows.loc[("gla", scope)]
        assert gla["status"] == "skipped"
        assert gla["message"] == "not supported here: GLAAttention is causal-only (supports_noncausal=False)"


def test_lstm_layer_workload_runs_both_passes_with_its_flops() -> None:
    cell = CellSpec(spec="lstm", scope="layer", pass_="fwd+bwd", batch=1, heads=2, head_dim=4, seq_len=5,
                    causal=False, dtype="float32", device="cpu", threads=1)  # fmt: skip
    build_workload(cell)()
    assert cell_flops(cell) == 3 * 2 * 5 * 4 * 2 * 8 * 8


def test_accuracy_skips_a_causal_only_variant_on_a_bidirectional_task() -> None:
    cell = get_preset("listops", "quick").cell("gla")  # the classifier's encoder is bidirectional
    row = run_accuracy_cell(cell).row
    assert row["status"] == "skipped"
    assert "causal-only (supports_noncausal=False)" in row["message"] and "listops" in row["message"]
    assert row["family"] == "recurrent"


def test_no_approximation_cell_for_a_variant_that_cannot_run_the_mode() -> None:
    from attnbench.sweeps.complexity import ComplexityConfig, approximation_cells

    config = ComplexityConfig(variants=["gla", "linear"], seq_lens=[32], causal=False)
    assert {c.spec for c in approximation_cells(config)} == {"linear"}
    causal = ComplexityConfig(variants=["gla", "linear"], seq_lens=[32], causal=True)
    assert {c.spec for c in approximation_cells(causal)} == {"gla", "linear"}
