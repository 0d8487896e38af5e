"""`attnbench bench accuracy` through the CLI on tiny sizes: every task, the CSVs, resume, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.runs.schema import ACCURACY_COLUMNS, BY_DISTANCE_COLUMNS, CURVES_COLUMNS

runner = CliRunner()
TINY = ["--steps", "3", "--seq-len", "32", "--d-model", "16", "--layers", "1", "--heads", "2", "--threads", "1"]


def _invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_task_trains_and_writes_the_three_csvs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    tasks = ["mqar", "listops", "induction", "selective-copy"]
    output = _invoke(["bench", "accuracy", *(a for t in tasks for a in ("--task", t)), "--variant", "softmax",
                      "--variant", "window:radius=4,block=8", *TINY, "--out", str(out)])  # fmt: skip
    rows = pd.read_csv(out / "accuracy.csv")
    assert tuple(rows.columns) == ACCURACY_COLUMNS
    assert len(rows) == 8
    assert set(rows["status"]) <= {"ok", "timeout"}
    assert set(rows["task"].str.partition(":")[0]) == set(tasks)
    assert ((rows["test_acc"] >= 0) & (rows["test_acc"] <= 1)).all()
    assert (rows["majority_acc"] > 0).all() and (rows["params"] > 0).all()
    copy = rows[rows["task"].str.startswith("selective-copy")].set_index("spec")
    assert copy.loc["window:block=8,radius=4", "cross_variant"] == "softmax"  # sparse has no cross form
    assert copy.loc["softmax", "cross_variant"] == "softmax"
    assert tuple(pd.read_csv(out / "curves.csv").columns) == CURVES_COLUMNS
    distances = pd.read_csv(out / "accuracy_by_distance.csv")
    assert tuple(distances.columns) == BY_DISTANCE_COLUMNS
    assert set(distances["task"].str.partition(":")[0]) >= {"mqar"}
    assert json.loads((out / "manifest.json").read_text())["sessions"][-1]["status"] == "complete"
    assert "accuracy (best-validation checkpoint" in output


def test_resume_runs_only_missing_cells(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _invoke(["bench", "accuracy", "--task", "mqar", "--variant", "softmax", "--variant", "linear",
             "--seed", "0", "--seed", "1", *TINY, "--out", str(out), "--max-cells", "3"])  # fmt: skip
    assert len(pd.read_csv(out / "accuracy.csv")) == 3
    _invoke(["bench", "accuracy", "--resume", str(out)])
    rows = pd.read_csv(out / "accuracy.csv")
    assert len(rows) == 4 and not rows.duplicated(["task", "spec", "seed"]).any()
    result = runner.invoke(app, ["bench", "accuracy", "--resume", str(out), "--steps", "9"])
    assert result.exit_code == 2 and "--resume finishes a run as it was configured" in result.output


def test_a_failing_variant_records_error_and_the_sweep_continues(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "bad.py"
    plugin.write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import SoftmaxAttention\n"
        "@register_attention('explodes-test')\n"
        "class Explodes(SoftmaxAttention):\n"
        "    def forward(self, q, k, v, *, causal=False, key_mask=None):\n"
        "        raise RuntimeError('deliberate')\n"
    )
    out = tmp_path / "run"
    _invoke(["--plugin", str(plugin), "bench", "accuracy", "--task", "mqar", "--variant", "explodes-test",
             "--variant", "softmax", *TINY, "--out", str(out)])  # fmt: skip
    rows = pd.read_csv(out / "accuracy.csv").set_index("spec")
    assert rows.loc["explodes-test", "status"] == "error"
    assert "deliberate" in rows.loc["explodes-test", "message"]
    assert rows.loc["softmax", "status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "mqar", "--variant", "windw"], "unknown attention 'windw'"),
        (["--task", "mqar", "--preset", "huge"], "unknown accuracy preset 'huge'"),
        (["--task", "listops", "--data-dir", "/no/such/dir"], "--data-dir /no/such/dir is not a directory"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "accuracy", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
