"""`attnbench bench decode` on tiny sizes: schema, statuses, exact state bytes, resume; the sweep's rules on a
scripted executor; the stability rule; the [decode] suite section."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.errors import UserError
from attnbench.execution.protocol import Outcome
from attnbench.measure.decode import DecodeReading, decode_cell
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import DECODE_COLUMNS, DECODE_CSV
from attnbench.sweeps.decode import decode_stable, run_decode
from attnbench.sweeps.decode_config import DecodeConfig
from attnbench.sweeps.suite_file import parse_suite
from tests.sweeps.test_executor_seam import ScriptedExecutor

runner = CliRunner()
HEADS, HEAD_DIM, BATCH = 2, 8, 2
CONTEXTS = (8, 16, 32)
FLOAT32 = 4


def _decode(out: Path, *extra: str) -> Any:
    args = ["bench", "decode", "--variant", "softmax", "--variant", "linear", "--variant", "nystrom",
            "--context", "8..32", "--batch", str(BATCH), "--heads", str(HEADS), "--head-dim", str(HEAD_DIM),
            "--steps", "3", "--threads", "1", *extra]  # fmt: skip
    if "--resume" not in extra:
        args += ["--out", str(out)]
    return runner.invoke(app, args)


def test_decode_sweep_rows_statuses_exact_state_bytes_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _decode(out, "--max-cells", "4")
    assert first.exit_code == 0, first.output
    partial = pd.read_csv(out / DECODE_CSV)
    assert tuple(partial.columns) == DECODE_COLUMNS
    assert len(partial) == 4  # stopped early: the session is interrupted, --resume finishes it
    assert json.loads((out / "manifest.json").read_text())["sessions"][-1]["status"] == "interrupted"

    second = _decode(out, "--resume", str(out))
    assert second.exit_code == 0, second.output
    rows = pd.read_csv(out / DECODE_CSV)
    assert len(rows) == 3 * len(CONTEXTS)
    assert not rows.duplicated(["spec", "batch", "context"]).any()  # the first four were not measured again
    pd.testing.assert_frame_equal(rows.head(4), partial)

    nystrom = rows[rows["spec"] == "nystrom"]
    assert set(nystrom["status"]) == {"skipped"}
    assert nystrom["message"].str.startswith("cannot decode: ").all()
    measured = rows[rows["spec"] != "nystrom"]
    assert set(measured["status"]) == {"ok"}
    assert (measured["prefill_s"] > 0).all() and (measured["decode_median_s"] > 0).all()
    assert measured["stable"].isin([True, False]).all()

    softmax = rows[rows["spec"] == "softmax"].set_index("context")["state_bytes"]
    # a K/V cache: keys and values of every token, linear in c
    assert softmax.to_dict() == {c: 2 * BATCH * HEADS * c * HEAD_DIM * FLOAT32 for c in CONTEXTS}
    linear = rows[rows["spec"] == "linear"].set_index("context")["state_bytes"]
    # a fixed state: Σ φ(k)vᵀ with the normaliser as an extra column, and one reference per head
    fixed = BATCH * HEADS * (HEAD_DIM * (HEAD_DIM + 1) + 1) * FLOAT32
    assert linear.to_dict() == dict.fromkeys(CONTEXTS, fixed)

    third = _decode(out, "--resume", str(out))
    assert third.exit_code == 0, third.output
    assert len(pd.read_csv(out / DECODE_CSV)) == len(rows)  # nothing left to do


def test_decode_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "decode", "--variant", "softmax", "--context", "0", "--out",
                                 str(tmp_path / "x")])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "--context" in result.output
    result = runner.invoke(app, ["bench", "decode", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


def _reading(median: float) -> DecodeReading:
    return DecodeReading(prefill_s=0.5, step_times_s=(median,) * 6, decode_median_s=median, decode_iqr_s=0.0,
                         state_bytes=100, peak_mem_bytes=1000, memory_method="scripted")  # fmt: skip


def test_a_failure_at_c_skips_larger_c_and_the_budget_skips_big_prefills(tmp_path: Path) -> None:
    def script(fn: Callable[..., Any], cell: Any) -> Outcome:
        assert fn is decode_cell
        if cell.spec == "linear" and cell.context == 16:
            return Outcome("oom", None, "scripted oom")
        return Outcome("ok", _reading(1e-4))

    run_dir = RunDir.create("decode", out=tmp_path / "run")
    config = DecodeConfig(variants=["softmax-naive", "linear"], contexts=[8, 16, 32, 4096], heads=HEADS,
                          head_dim=HEAD_DIM, memory_budget_bytes=2**20)  # fmt: skip
    executor = ScriptedExecutor(script)
    run_decode(config, run_dir, executor)
    rows = run_dir.rows(DECODE_CSV, DECODE_COLUMNS).set_index(["spec", "context"])
    assert rows.loc[("linear", 16), "status"] == "oom"
    assert rows.loc[("linear", 32), "message"] == "skipped: oom at c=16"
    # softmax-naive's prefill materialises c × c scores: 4096² floats per head are over a 1 MiB budget
    assert rows.loc[("softmax-naive", 4096), "status"] == "skipped"
    assert "memory budget" in rows.loc[("softmax-naive", 4096), "message"]
    assert rows.loc[("softmax-naive", 32), "status"] == "ok" and bool(rows.loc[("softmax-naive", 32), "stable"])
    ran = {(c.spec, c.context) for _, c in executor.submitted}
    assert ran == {("softmax-naive", 8), ("softmax-naive", 16), ("softmax-naive", 32), ("linear", 8), ("linear", 16)}


def test_stability_rule_on_the_spread_of_step_times() -> None:
    assert decode_stable([1.0] * 6, median_s=1.0, iqr_s=0.25)
    assert not decode_stable([1.0] * 6, median_s=1.0, iqr_s=0.26)  # spread too wide
    assert not decode_stable([1.0] * 4, median_s=1.0, iqr_s=0.0)  # too few steps to tell


def test_suite_decode_section_is_checked() -> None:
    suite = parse_suite({"decode": {"variants": ["softmax"], "contexts": "256..1024"}}, source="t", default_name="t")
    assert suite.decode is not None and suite.decode.contexts == [256, 512, 1024]
    with pytest.raises(UserError, match=r"\[decode\] has unknown key\(s\) context"):
        parse_suite({"decode": {"variants": ["softmax"], "context": 8}}, source="t", default_name="t")
    with pytest.raises(UserError, match=r"\[decode\].*contexts"):
        parse_suite({"decode": {"variants": ["softmax"], "contexts": [0]}}, source="t", default_name="t")
