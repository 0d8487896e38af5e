"""Reading a run back: corrupted rows cost a warning, a bad manifest one line, and no plugin code runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.runs import validation
from attnbench.runs.loading import load_run
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import COMPLEXITY_COLUMNS
from tests.reporting.test_report import full_run, synthetic_complexity, synthetic_manifest, write_run

runner = CliRunner()


@pytest.fixture
def warnings_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(validation, "warn", seen.append)
    monkeypatch.setattr(validation, "_warned", set())
    return seen


def _corrupt(path: Path) -> int:
    """Append a garbage line, a 40-field line, a negative time, an unknown status and a duplicate; returns
    how many rows were valid before."""
    lines = path.read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")

    def edited(column: str, value: str) -> str:
        row = list(first)
        row[header.index(column)] = value
        row[header.index("seq_len")] = "999"  # a cell of its own: only its fault can reject it
        return ",".join(row)

    bad = ["garbage here", ",".join(["1"] * 40), edited("time_median_s", "-0.5"), edited("status", "weird"),
           lines[1]]  # fmt: skip
    path.write_text("\n".join([*lines, *bad]) + "\n")
    return len(lines) - 1


def test_corrupted_rows_are_skipped_with_one_warning_per_file(tmp_path: Path, warnings_seen: list[str]) -> None:
    run = full_run(tmp_path / "run")
    valid = _corrupt(run / "complexity.csv")
    data = load_run(run)
    assert len(data.complexity) == valid and (data.complexity["time_median_s"].dropna() >= 0).all()
    assert len(warnings_seen) == 1
    n = valid + 1
    assert warnings_seen[0] == (
        f"{run / 'complexity.csv'}: 5 rows rejected (line {n + 1}: 1 field (expected {len(COMPLEXITY_COLUMNS)}); "
        f"line {n + 2}: 40 fields (expected {len(COMPLEXITY_COLUMNS)}); line {n + 3}: negative time_median_s; 2 more)"
    )
    load_run(run)
    assert len(warnings_seen) == 1  # read again in the same process: not warned again


@pytest.mark.parametrize(
    ("value", "reason"),
    [("time_median_s=abc", "time_median_s 'abc' is not a number"), ("seq_len=0", "non-positive seq_len"),
     ("seq_len=2.5", "seq_len '2.5' is not an integer"), ("peak_fraction=inf", "peak_fraction is not finite"),
     ("status=", "empty status"), ("time_median_s=", "status ok without a finite time_median_s")],
)  # fmt: skip
def test_each_value_is_checked_by_its_column_kind(value: str, reason: str) -> None:
    from attnbench.runs.validation import row_problem

    row = dict.fromkeys(COMPLEXITY_COLUMNS, "1") | {"spec": "softmax", "causal": "false", "status": "ok"}
    column, _, text = value.partition("=")
    assert row_problem(COMPLEXITY_COLUMNS, list(row.values()), "complexity.csv") is None
    assert row_problem(COMPLEXITY_COLUMNS, list((row | {column: text}).values()), "complexity.csv") == reason


def test_report_and_compare_of_corrupted_runs_warn_and_finish(tmp_path: Path) -> None:
    a, b = (write_run(tmp_path / name, complexity=synthetic_complexity()) for name in "ab")  # few plots: quick
    for run in (a, b):
        _corrupt(run / "complexity.csv")
    validation._warned.clear()
    report = runner.invoke(app, ["report", str(b)])
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output
    assert "complexity.csv: 5 rows rejected" in report.output
    compared = runner.invoke(app, ["compare", str(a), str(b)])
    assert compared.exit_code in (0, 1), compared.output  # 1: a regression, not a crash
    assert compared.exception is None or isinstance(compared.exception, SystemExit)


@pytest.mark.parametrize("manifest", ["[1, 2]", '"text"', "{not json"])
def test_a_manifest_that_is_not_an_object_is_one_line_and_exit_2(tmp_path: Path, manifest: str) -> None:
    run = full_run(tmp_path / "run")
    (run / "manifest.json").write_text(manifest)
    for args in (["report", str(run)], ["compare", str(run), str(run)], ["bench", "complexity", "--resume", str(run)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.output.startswith("error: "), (args, result.output)
        assert result.output.count("\n") == 1 and "manifest.json" in result.output


def test_reading_a_run_imports_none_of_its_plugins(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    plugin = tmp_path / "hostile.py"
    plugin.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from attnbench import register_attention\n"
        "from attnbench.variants.sparse import WindowAttention\n"
        "register_attention('hostile-sparse')(type('Hostile', (WindowAttention,), {}))\n"
    )
    manifest = synthetic_manifest()
    manifest["plugins"] = {"files_and_modules": [str(plugin)], "entry_points": {}}
    run = write_run(tmp_path / "run", manifest=manifest, complexity=synthetic_complexity())
    lines = (run / "complexity.csv").read_text().splitlines()
    sparse = next(line for line in lines if ",sparse," in line)
    hostile = sparse.replace(sparse.split(",")[0], "hostile-sparse")  # a row of the plugin's sparse variant
    (run / "complexity.csv").write_text("\n".join([*lines, hostile]) + "\n")
    (run / "manifest.json").write_text(json.dumps(manifest))
    report = runner.invoke(app, ["report", str(run)])
    assert report.exit_code == 0, report.output
    assert (run / "plots" / "patterns.png").exists()  # drawn, with a note in place of the plugin's pattern
    runner.invoke(app, ["compare", str(run), str(run)])
    assert not marker.exists()  # report and compare never ran the plugin
    refused = runner.invoke(app, ["bench", "complexity", "--resume", str(run)])
    assert refused.exit_code == 2 and "--trust-plugins" in refused.output and not marker.exists()
    assert RunDir.existing(run).lock_for_writing().lock.held  # the refused resume left the directory free
