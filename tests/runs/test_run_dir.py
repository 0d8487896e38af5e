"""Where a run directory goes: a bad ``--out`` is one line and exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.errors import UserError
from attnbench.runs.rundir import RunDir

runner = CliRunner()
TINY = ["--variant", "softmax", "--seq-len", "32", "--heads", "2", "--head-dim", "8", "--threads", "1"]


def _bad_outs(tmp_path: Path) -> dict[str, Path]:
    existing_file = tmp_path / "results.txt"
    existing_file.write_text("not a directory\n")
    return {"a file": existing_file, "under a file": existing_file / "run", "unwritable": Path("/proc/attnbench-run")}


@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable"])
def test_a_bad_out_is_a_usage_error_naming_the_path(tmp_path: Path, case: str) -> None:
    out = _bad_outs(tmp_path)[case]
    result = runner.invoke(app, ["bench", "complexity", *TINY, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert str(out) in result.output and "Traceback" not in result.output
    assert "directory" in result.output


def test_create_reports_an_unusable_out_or_root_as_a_user_error(tmp_path: Path) -> None:
    bad = _bad_outs(tmp_path)
    with pytest.raises(UserError, match=r"is a file, not a directory"):
        RunDir.create("x", out=bad["a file"])
    with pytest.raises(UserError, match=r"cannot create run directory .*results\.txt/run"):
        RunDir.create("x", out=bad["under a file"])
    with pytest.raises(UserError, match=r"cannot create run directory"):
        RunDir.create("x", root=bad["a file"] / "results")
