"""`attnbench run` on a tiny suite: manifest, both CSVs, plots and report in one run directory; resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from attnbench.cli import app

runner = CliRunner()

TINY_SUITE = """
name = "tiny"
description = "seconds, for tests"

[complexity]
variants = ["softmax", "softmax-naive", "window:radius=8,block=16", "linear"]
seq_lens = "32..64"
passes = ["fwd", "fwd+bwd"]
heads = 2
head_dim = 8
min_run_time = 0.01
max_run_time = 0.05

[[accuracy.tasks]]
task = "mqar"
variants = ["softmax", "linear"]
overrides = { steps = 3, seq_len = 32, d_model = 16, num_layers = 1, val_size = 64, test_size = 64 }

[decode]
variants = ["softmax", "linear"]
contexts = [16, 32]
heads = 2
head_dim = 8
steps = 3

[report]
acc_tolerance = 3.0
"""


def test_run_a_tiny_suite_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--suite", str(suite), "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suite"] == "tiny"
    assert manifest["run"]["acc_tolerance"] == 3.0
    assert manifest["sessions"][-1]["status"] == "complete"
    complexity = pd.read_csv(out / "complexity.csv")
    assert len(complexity) == 4 * 2 * 2 and set(complexity["status"]) == {"ok"}
    assert len(pd.read_csv(out / "accuracy.csv")) == 2
    assert set(pd.read_csv(out / "approximation.csv")["spec"]) == {"linear"}
    decode = pd.read_csv(out / "decode.csv")
    assert len(decode) == 2 * 2 and set(decode["status"]) == {"ok"}
    assert manifest["decode"]["contexts"] == [16, 32]
    plots = {p.name for p in (out / "plots").iterdir()}
    for name in ("time_vs_n_attention", "memory_vs_n_attention", "gflops_vs_n_attention", "accuracy"):
        assert {f"{name}.png", f"{name}.svg"} <= plots, plots
    report = (out / "report.md").read_text()
    for spec in ("softmax", "softmax-naive", "window:block=16,radius=8", "linear"):
        assert spec in report
    assert "3 percentage points" in report
    assert "## Decoding (inference cost)" in report
    assert f"report: {out / 'report.md'}" in result.output.replace("\n", "")


def test_run_resume_and_report_regeneration(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "run"
    first = runner.invoke(app, ["run", "--suite", str(suite), "--out", str(out), "--threads", "1", "--max-cells", "2"])
    assert first.exit_code == 0, first.output
    assert len(pd.read_csv(out / "complexity.csv")) == 2
    second = runner.invoke(app, ["run", "--resume", str(out)])
    assert second.exit_code == 0, second.output
    assert len(pd.read_csv(out / "complexity.csv")) == 16
    assert len(pd.read_csv(out / "accuracy.csv")) == 2
    assert len(pd.read_csv(out / "decode.csv")) == 4
    (out / "report.md").unlink()
    again = runner.invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "report.md").exists()
    refused = runner.invoke(app, ["run", "--resume", str(out), "--suite", "quick"])
    assert refused.exit_code == 2 and "drop --suite" in refused.output


def test_run_rejects_a_bad_suite_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[complexity]\nvariants = ["softmax"]\nheads = "two"\n')
    result = runner.invoke(app, ["run", "--suite", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "[complexity].heads: expected int, got two" in result.output
    assert not (tmp_path / "run").exists()
